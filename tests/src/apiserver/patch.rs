//! JSON merge patch (RFC 7386; also used for strategic-merge and apply
//! patches) and JSON patch (RFC 6902).

use serde_json::Value;

/// Applies an RFC 7386 merge patch to `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into its parent pointer and last token.
fn split(path: &str) -> Result<(&str, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((&path[..i], unescape(&path[i + 1..])))
}

fn parent<'a>(doc: &'a mut Value, pointer: &str) -> Result<&'a mut Value, String> {
    doc.pointer_mut(pointer)
        .ok_or_else(|| format!("doc is missing path: {pointer:?}"))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (p, last) = split(path)?;
    match parent(doc, p)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("invalid array index {last:?} in {path:?}"))?
            };
            a.insert(i, value);
        }
        _ => return Err(format!("cannot add at {path:?}: parent is not a container")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (p, last) = split(path)?;
    let missing = || format!("unable to remove nonexistent key: {path:?}");
    match parent(doc, p)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 JSON patch (add, remove, replace, test, move, copy).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("missing value for {path:?}"))
        };
        let from = || {
            op["from"]
                .as_str()
                .ok_or(format!("missing from for {path:?}"))
        };
        match op["op"].as_str() {
            Some("add") => add(doc, path, value()?)?,
            Some("remove") => {
                remove(doc, path)?;
            }
            Some("replace") => {
                remove(doc, path)?;
                add(doc, path, value()?)?;
            }
            Some("test") => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path:?} failed"));
                }
            }
            Some("move") => {
                let v = remove(doc, from()?)?;
                add(doc, path, v)?;
            }
            Some("copy") => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or(format!("missing from path for {path:?}"))?;
                add(doc, path, v)?;
            }
            other => {
                return Err(format!(
                    "unexpected kind of JSON patch operation: {other:?}"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": {"b": 1}, "l": [1, 2]});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/c", "value": 3},
                {"op": "replace", "path": "/a/b", "value": 5},
                {"op": "remove", "path": "/l/0"},
                {"op": "add", "path": "/l/-", "value": 9},
                {"op": "test", "path": "/a/c", "value": 3},
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"a": {"b": 5, "c": 3}, "l": [2, 9]}));
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/zz"}])).is_err());
        assert!(json_patch(
            &mut t,
            &json!([{"op": "replace", "path": "/zz", "value": 1}])
        )
        .is_err());
    }
}
