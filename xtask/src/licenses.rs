//! The licenses agree: every crate's `license` field (SPDX, `OR` only)
//! names licenses whose text is a `LICENSE-*` file at the root, every such
//! file is named by some crate, and the eBPF object's license string (the
//! `license` section the kernel reads) says the same as `lb-ebpf`'s field.
//! Checked by the unit tests below (`cargo xtask test`).

use std::path::Path;

/// SPDX identifier → the file holding its text and a line that file starts
/// with (after blank lines).
const TEXTS: &[(&str, &str, &str)] = &[
    ("MIT", "LICENSE-MIT", "MIT License"),
    ("Apache-2.0", "LICENSE-APACHE", "Apache License"),
    ("GPL-2.0-only", "LICENSE-GPL-2.0", "GNU GENERAL PUBLIC LICENSE"),
];

/// The kernel's license strings (include/linux/license.h) that xlb may use,
/// and the SPDX identifiers each one means.
const KERNEL_STRINGS: &[(&str, &[&str])] =
    &[("GPL", &["GPL-2.0-only"]), ("GPL v2", &["GPL-2.0-only"]), ("Dual MIT/GPL", &["MIT", "GPL-2.0-only"])];

/// The `license` value of a Cargo.toml's `[package]` (or
/// `[workspace.package]`) text: `Some("workspace")` for
/// `license.workspace = true`.
pub fn license_field(cargo_toml: &str) -> Option<String> {
    cargo_toml.lines().find_map(|l| {
        let l = l.trim();
        if l.replace(' ', "") == "license.workspace=true" {
            return Some("workspace".to_string());
        }
        let rest = l.strip_prefix("license")?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    })
}

/// The SPDX identifiers of an `A OR B` expression.
pub fn spdx_ids(expr: &str) -> Vec<String> {
    expr.split(" OR ").map(|s| s.trim().to_string()).collect()
}

/// Where the eBPF objects' license string is declared (once for the data
/// path and the benchmarks' programs).
const EBPF_LICENSE_SOURCE: &str = "lb-ebpf/src/runtime.rs";

/// The string of `static LICENSE: [u8; N] = *b"...\0";` in eBPF source.
pub fn ebpf_license_string(source: &str) -> Option<String> {
    let line = source.lines().find(|l| l.contains("static LICENSE"))?;
    let start = line.find("b\"")? + 2;
    let end = line[start..].find("\\0")? + start;
    Some(line[start..end].to_string())
}

/// Every problem found in the workspace at `root`.
pub fn problems(root: &Path) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let mut out = Vec::new();
    let workspace = license_field(&read("Cargo.toml"));
    let mut named: Vec<String> = Vec::new();
    for krate in ["lb-common", "lb-ebpf", "lb-userspace", "tests", "xtask"] {
        let field = match license_field(&read(&format!("{krate}/Cargo.toml"))) {
            Some(f) if f == "workspace" => workspace.clone(),
            other => other,
        };
        let Some(field) = field else {
            out.push(format!("{krate}/Cargo.toml has no license field"));
            continue;
        };
        for id in spdx_ids(&field) {
            match TEXTS.iter().find(|(spdx, ..)| *spdx == id) {
                None => out.push(format!("{krate}: license {id} has no LICENSE-* file known to xtask/src/licenses.rs")),
                Some((_, file, first)) => {
                    let text = read(file);
                    if text.lines().map(str::trim).find(|l| !l.is_empty()) != Some(first) {
                        out.push(format!("{file} (for {krate}'s {id}) is missing or does not start with {first:?}"));
                    }
                    named.push(file.to_string());
                }
            }
        }
        if krate == "lb-ebpf" {
            let string = ebpf_license_string(&read(EBPF_LICENSE_SOURCE));
            match string.as_deref().and_then(|s| KERNEL_STRINGS.iter().find(|(k, _)| *k == s)) {
                None => out.push(format!("{EBPF_LICENSE_SOURCE}: license string {string:?} is not one xlb knows")),
                Some((k, ids)) => {
                    let mut want: Vec<String> = ids.iter().map(std::string::ToString::to_string).collect();
                    let mut have = spdx_ids(&field);
                    want.sort();
                    have.sort();
                    if want != have {
                        out.push(format!(
                            "lb-ebpf: the object's license string {k:?} means {want:?} but Cargo.toml says {field:?}"
                        ));
                    }
                }
            }
        }
    }
    let files: Vec<String> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("LICENSE"))
                .collect()
        })
        .unwrap_or_default();
    for f in files {
        if !named.contains(&f) {
            out.push(format!("{f} is named by no crate's license field"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_licenses_agree() {
        let p = problems(&crate::util::workspace_root());
        assert!(p.is_empty(), "license problems:\n  {}", p.join("\n  "));
    }

    #[test]
    fn parsers() {
        assert_eq!(
            license_field("[package]\nname = \"x\"\nlicense = \"MIT OR Apache-2.0\"\n").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(license_field("license.workspace = true\n").as_deref(), Some("workspace"));
        assert_eq!(license_field("license-file = \"X\"\n"), None);
        assert_eq!(spdx_ids("MIT OR GPL-2.0-only"), ["MIT", "GPL-2.0-only"]);
        assert_eq!(
            ebpf_license_string("#[unsafe(no_mangle)]\nstatic LICENSE: [u8; 13] = *b\"Dual MIT/GPL\\0\";\n").as_deref(),
            Some("Dual MIT/GPL")
        );
    }

    #[test]
    fn a_mismatch_is_found() {
        let dir = crate::util::target_dir().join("xtask").join(format!("licenses-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for k in ["lb-common", "lb-ebpf/src", "lb-userspace", "tests", "xtask"] {
            std::fs::create_dir_all(dir.join(k)).unwrap();
        }
        std::fs::write(dir.join("Cargo.toml"), "[workspace.package]\nlicense = \"MIT OR Apache-2.0\"\n").unwrap();
        for k in ["lb-common", "lb-ebpf", "lb-userspace", "tests", "xtask"] {
            std::fs::write(dir.join(k).join("Cargo.toml"), "license.workspace = true\n").unwrap();
        }
        std::fs::write(dir.join(EBPF_LICENSE_SOURCE), "static LICENSE: [u8; 13] = *b\"Dual MIT/GPL\\0\";\n").unwrap();
        std::fs::write(dir.join("LICENSE-MIT"), "MIT License\n").unwrap();
        std::fs::write(dir.join("LICENSE"), "whatever\n").unwrap();
        let p = problems(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let has = |needle: &str| p.iter().any(|l| l.contains(needle));
        assert!(has("LICENSE-APACHE (for"), "{p:?}");
        assert!(has("\"Dual MIT/GPL\" means"), "{p:?}");
        assert!(has("LICENSE is named by no crate"), "{p:?}");
    }
}
