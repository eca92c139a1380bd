//! Third-party programs the tests start: found on the machine (`.ci/run`
//! installs them; under CI a missing one fails the test), killed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command},
};

/// The program's path, or None (after saying so) where it is not
/// installed outside CI.
pub fn find(name: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {name} (.ci/run)"
        );
        println!("skipped: {name} is not installed (.ci/run installs it)");
    }
    found
}

/// A started program, killed when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        Running(cmd.spawn().expect("program starts"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to the end off the async runtime; its stdout, checked.
pub async fn output(mut cmd: Command) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("program runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
