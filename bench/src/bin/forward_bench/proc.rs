//! Processes the bench starts (the agent, nginx).

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use crate::topology::Ns;

// ---------------------------------------------------------------- processes

/// A process we started; SIGTERM (then SIGKILL) on drop.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) log: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// Starts `cmd` in `ns`, keeping the last 200 lines of its output.
    pub(crate) fn spawn(ns: &Ns, name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ns.spawn(&mut cmd).with_context(|| format!("cannot start {name}"))?;
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?),
            Box::new(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?),
        ];
        for pipe in pipes {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut l = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if l.len() >= 200 {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        Ok(Proc { name: name.to_string(), child, log })
    }

    pub(crate) fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        l.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n")
    }

    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: our unreaped child (try_wait said it runs).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.running() {
            eprintln!("forward_bench: {} ignored SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
