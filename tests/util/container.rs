//! A real systemd as PID 1 in a `systemd-nspawn` container built from this machine's own `/usr`
//! (no download). `nspawn -D /` is refused, hence the skeleton; each step below says why it is
//! there.
//!
//! [`Container::boot`] builds a skeleton root in a fresh directory (a copy of `/etc` with a
//! `machine-id` of its own and without the host's enabled services, empty `var/ tmp/ root/`, the
//! merged-/usr links), then starts `systemd-nspawn -b` inside a private mount namespace of its
//! own (`unshare -m`): there it mounts an overlay on the skeleton's `usr/` (the host's `/usr`
//! below, our own upper directory on top, so a package installed inside never touches the host)
//! and a tmpfs on `/run/systemd/nspawn` (nspawn refuses to clean a propagation directory on a
//! disk file system). Every mount lives and dies with that namespace: when nspawn exits they are
//! gone, even if this test process was killed (nspawn gets SIGTERM, its poweroff signal, when
//! the thread that started it ends; only the directory is then left, and the next run removes
//! it), and the host's mount table never sees them.
//!
//! [`Container::sh`] runs a command inside (`nsenter -a` into PID 1's namespaces), bounded by
//! `timeout`; [`Container::in_netns`] runs a closure on a thread inside the container's private
//! network (the sockets it opens stay there). Drop powers the container off, waits (bounded),
//! kills what is left and removes the directory, pass or fail; [`Leftovers`] checks that it did.

use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{netns, wait_until};

/// How long the container's systemd may take to finish booting (5 to 20 s measured here).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a command run inside may take before `timeout` kills it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `poweroff` may take before the container is killed (about 3 s measured here).
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);

/// What the host has enabled and a container cannot run (its own databases, firewall,
/// monitoring): removed from the skeleton's `/etc` so the boot is quick and the tests see only
/// the units they start.
const HOST_WANTS: &[&str] = &["multi-user.target.wants", "timers.target.wants"];

/// A booted container. See the module docs.
pub struct Container {
    dir: PathBuf,
    root: PathBuf,
    nspawn: Child,
    pid1: i32,
}

/// Why a container could not be booted here: the caller skips (or fails under
/// `VIGILD_TESTS_NO_SKIP=1`) with this text.
pub fn probe() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("booting systemd in a container needs root".into());
    }
    for tool in ["systemd-nspawn", "nsenter", "unshare", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "{tool} is missing (scripts/test installs systemd-container)"
            ));
        }
    }
    Ok(())
}

impl Container {
    /// Builds the skeleton, boots it and waits until its systemd has finished booting.
    pub fn boot(tag: &str) -> Container {
        static N: AtomicUsize = AtomicUsize::new(0);
        // Under /var/tmp: /tmp may be a tmpfs too small for a copy of /etc, and the overlay's
        // upper and work directories must be on one file system (this one).
        let dir = PathBuf::from(format!(
            "/var/tmp/vigild-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        remove_stale(tag);
        let root = dir.join("root");
        let nspawn = match build_skeleton(&dir, &root).and_then(|()| spawn(&dir, &root)) {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot start systemd-nspawn in {}: {e}", dir.display());
            }
        };
        let mut container = Container {
            dir,
            root,
            nspawn,
            pid1: 0,
        };
        let started = Instant::now();
        container.pid1 = wait_until(BOOT_TIMEOUT, "the container's systemd (PID 1)", || {
            if let Ok(Some(status)) = container.nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn exited with {status}:\n{}",
                    container.console()
                ));
            }
            pid1_of(container.nspawn.id() as i32).ok_or_else(|| "not yet".to_string())
        });
        let state = wait_until(BOOT_TIMEOUT, "the container to finish booting", || {
            let out = container.sh("systemctl is-system-running");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                // degraded: some unit of the host's image failed inside; the tests look at
                // their own units only.
                "running" | "degraded" => Ok(state),
                _ => Err(format!("is-system-running: {state:?}")),
            }
        });
        eprintln!(
            "container booted in {:.1} s ({state}), PID 1 is {}",
            started.elapsed().as_secs_f64(),
            container.pid1
        );
        container
    }

    /// The skeleton root as the host sees it: files put here (outside `usr/`) are visible
    /// inside at the same path below `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the skeleton and the overlay's layers (for [`Leftovers`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The container's PID 1 (its systemd), as the host numbers it.
    pub fn pid1(&self) -> i32 {
        self.pid1
    }

    /// Runs `script` with `sh -c` inside the container, bounded by [`COMMAND_TIMEOUT`].
    pub fn sh(&self, script: &str) -> Output {
        self.sh_within(COMMAND_TIMEOUT, script)
    }

    /// Like [`Container::sh`] with its own bound.
    pub fn sh_within(&self, limit: Duration, script: &str) -> Output {
        Command::new("timeout")
            .args(["-k", "5", &format!("{}", limit.as_secs().max(1))])
            .args(["nsenter", "-t", &self.pid1.to_string(), "-a", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// Runs `script` inside and returns its stdout; fails on a non-zero exit, with its output.
    #[track_caller]
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` inside the container: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the container's network namespace (its private loopback)
    /// and returns its value: sockets opened there can be used from any thread afterwards.
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let pid = self.pid1;
        std::thread::spawn(move || {
            netns::enter_netns_of(pid).expect("setns into the container's network");
            f()
        })
        .join()
        .expect("a thread in the container's network panicked")
    }

    /// What the container printed on its console (nspawn's output), for failure messages.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let nspawn = self.nspawn.id() as i32;
        if self.pid1 > 0 {
            let _ = Command::new("timeout")
                .args([
                    "-k",
                    "2",
                    "10",
                    "nsenter",
                    "-t",
                    &self.pid1.to_string(),
                    "-a",
                ])
                .args(["systemctl", "poweroff", "--no-block"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let start = Instant::now();
        let mut exited = false;
        while start.elapsed() < POWEROFF_TIMEOUT {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            eprintln!(
                "container {} did not power off within {POWEROFF_TIMEOUT:?}: killing it",
                self.dir.display()
            );
            // Killing PID 1 ends its whole PID namespace; then nspawn itself.
            if self.pid1 > 0 {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(self.pid1, libc::SIGKILL) };
            }
            // SAFETY: as above; nspawn is our child, not yet reaped, so its pid is ours.
            unsafe { libc::kill(nspawn, libc::SIGKILL) };
            let _ = self.nspawn.wait();
        }
        // The mounts went with nspawn's mount namespace: only files remain.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a container leaves behind if its cleanup failed: its directory, a mount below it, a
/// process still running in it. Taken before drop, checked after.
pub struct Leftovers {
    dir: PathBuf,
    pids: [i32; 2],
}

impl Leftovers {
    pub fn of(c: &Container) -> Leftovers {
        Leftovers {
            dir: c.dir.clone(),
            pids: [c.nspawn.id() as i32, c.pid1],
        }
    }

    /// Fails naming what is left.
    #[track_caller]
    pub fn assert_none(&self) {
        let mut left = Vec::new();
        if self.dir.exists() {
            left.push(format!("directory {}", self.dir.display()));
        }
        let dir = self.dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines().filter(|l| l.contains(&dir)) {
            left.push(format!("mount {line}"));
        }
        for pid in self.pids {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false);
            if pid > 0 && alive {
                left.push(format!("process {pid}"));
            }
        }
        // Any process whose root is the skeleton (the container's, by another pid).
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let root = std::fs::read_link(e.path().join("root")).unwrap_or_default();
                if root.starts_with(&self.dir) {
                    left.push(format!(
                        "process {:?} rooted in the skeleton",
                        e.file_name()
                    ));
                }
            }
        }
        assert!(left.is_empty(), "the container left behind: {left:?}");
    }
}

/// The skeleton: `etc/` (a copy of `/etc` with its own machine-id, none of the host's enabled
/// services), empty `usr/ var/ tmp/ root/`, `bin sbin lib lib64 -> usr/...`, dpkg's database
/// (so `dpkg -i` works inside), and the overlay's empty `upper/` and `work/`. Directories are
/// 0755: a `DynamicUser=` service cannot otherwise change into its root or exec its binary.
fn build_skeleton(dir: &Path, root: &Path) -> std::io::Result<()> {
    for d in ["", "root", "upper", "work"] {
        std::fs::create_dir_all(dir.join(d))?;
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o755))?;
    }
    let copied = Command::new("cp")
        .args(["-a", "/etc"])
        .arg(root.join("etc"))
        .status()?;
    if !copied.success() {
        return Err(std::io::Error::other("cp -a /etc failed"));
    }
    // A machine-id of its own: without one, systemd treats the boot as a first boot and
    // applies the distribution's presets, enabling every installed service (nginx, databases)
    // and `network-online.target`, which then waits two minutes for a network it has not got.
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")?.replace('-', "");
    std::fs::write(root.join("etc/machine-id"), id)?;
    for wants in HOST_WANTS {
        let _ = std::fs::remove_dir_all(root.join("etc/systemd/system").join(wants));
    }
    for d in ["usr", "var/lib", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    for l in ["bin", "sbin", "lib", "lib64"] {
        symlink(format!("usr/{l}"), root.join(l))?;
    }
    let copied = Command::new("cp")
        .args(["-a", "/var/lib/dpkg"])
        .arg(root.join("var/lib/dpkg"))
        .status()?;
    if !copied.success() {
        return Err(std::io::Error::other("cp -a /var/lib/dpkg failed"));
    }
    // nspawn's propagation directory: the tmpfs goes on it inside the private mount namespace.
    std::fs::create_dir_all("/run/systemd/nspawn")?;
    Ok(())
}

/// Removes what a killed test run left (its directory, see the module docs): a
/// `/var/tmp/vigild-{tag}-{pid}-{n}` whose test process `pid` is gone.
fn remove_stale(tag: &str) {
    let prefix = format!("vigild-{tag}-");
    let Ok(entries) = std::fs::read_dir("/var/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// `systemd-nspawn -b` in a private mount namespace that first mounts the overlay on `usr/` and
/// the tmpfs on `/run/systemd/nspawn`. Output goes to `console.log`.
fn spawn(dir: &Path, root: &Path) -> std::io::Result<Child> {
    const SCRIPT: &str = r#"set -e
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$1/upper,workdir=$1/work" "$2/usr"
mount -t tmpfs tmpfs /run/systemd/nspawn
exec systemd-nspawn -D "$2" -b --register=no --keep-unit --private-network -q"#;
    let console = std::fs::File::create(dir.join("console.log"))?;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        SCRIPT,
        "sh",
    ])
    .arg(dir)
    .arg(root)
    .stdin(Stdio::null())
    .stdout(console.try_clone()?)
    .stderr(console);
    netns::terminate_with_parent(&mut cmd);
    cmd.spawn()
}

/// The `systemd` child of the nspawn process: the container's PID 1.
fn pid1_of(nspawn: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == "systemd")
                .unwrap_or(false)
        })
}
