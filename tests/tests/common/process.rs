//! Child processes of the tests (benches, nested builds), bounded in time.

use std::time::{Duration, Instant};

/// The workspace's root directory.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Waits for `child` up to `limit`; on overrun SIGTERM (the benches clean
/// up on it), then SIGKILL. Returns (success, stdout, stderr).
pub fn wait_bounded(mut child: std::process::Child, limit: Duration, what: &str) -> (bool, String, String) {
    let (t_out, t_err) = xlb_tests::read_pipes(&mut child).expect("stdout and stderr piped");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            eprintln!("{what} still running after {limit:?}; stopping it");
            // SAFETY: our unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let grace = Instant::now() + Duration::from_secs(20);
            while Instant::now() < grace {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text =
        |t: std::thread::JoinHandle<Vec<u8>>| String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned();
    (status.is_some_and(|s| s.success()), text(t_out), text(t_err))
}
