//! The Debian package and the man page: `scripts/deb` builds `vigild_<version>_amd64.deb`, and
//! its contents, control fields, conffiles and maintainer scripts are read back with
//! `dpkg-deb`; the packaged binary runs, the packaged units and config are the repository's.
//! As root, the real `dpkg --root` installs, upgrades, removes and purges it on a throwaway
//! root, in a private mount namespace, with a recording `systemctl` / `deb-systemd-helper` /
//! `deb-systemd-invoke`: what is left on disk (conffile semantics included) and what each
//! step asks of systemd. Installing under a real, booted systemd is the booted-systemd test's
//! part.
//!
//! vigild(8) (`docs/vigild.8`) is checked against the code: its version, every option and
//! signal `vigild --help` names, every unit file and the default config path, and a render
//! by groff without warnings. The reap reasons and their levels are checked beside
//! `ReapReason` (`src/session/reap.rs`).

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use util::TempDir;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The man page with roff's `\-` read as `-`.
fn man_page() -> String {
    fs::read_to_string(repo().join("docs/vigild.8"))
        .expect("read docs/vigild.8")
        .replace("\\-", "-")
}

/// The text of the man page's section `name` (from `.SH name` to the next `.SH`).
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    page.split("\n.SH ")
        .find(|s| s.lines().next() == Some(name))
        .unwrap_or_else(|| panic!("docs/vigild.8 has no section {name}"))
}

/// Every word in `text` that looks like an option (`-c`, `--check-config`).
fn options_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            let long =
                w.len() > 2 && w.starts_with("--") && w[2..].starts_with(char::is_alphabetic);
            let short =
                w.len() == 2 && w.starts_with('-') && w[1..].starts_with(char::is_alphabetic);
            long || short
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn man_page_matches_the_code() {
    let page = man_page();
    let help = stdout(&run(
        Command::new(util::vigild_bin()).arg("--help"),
        "vigild --help",
    ));

    let th = page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect("docs/vigild.8 has a .TH line");
    assert!(
        th.starts_with(".TH VIGILD 8 ") && th.contains(&format!("\"vigild {VERSION}\"")),
        "docs/vigild.8: {th:?} should name section 8 and \"vigild {VERSION}\""
    );

    // The options: what --help's usage lines name (with their `[--flag]` continuation lines),
    // and -h/-V beside --help/--version, are exactly what OPTIONS describes.
    let usage: String = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("vigild") || l.starts_with('['))
        .collect::<Vec<_>>()
        .join("\n");
    let mut code = options_in(&usage);
    // The short forms are not in the usage lines: whichever the parser knows counts.
    for short in ["-c", "-h", "-V"] {
        let out = Command::new(util::vigild_bin())
            .arg(short)
            .output()
            .expect("run vigild");
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("unknown argument") {
            code.insert(short.to_string());
        }
    }
    let options = section(&page, "OPTIONS");
    let documented: BTreeSet<String> = options
        .lines()
        .filter(|l| l.starts_with(".BR ") || l.starts_with(".B "))
        .flat_map(options_in)
        .collect();
    assert_eq!(
        documented, code,
        "docs/vigild.8, OPTIONS (left) and vigild --help / the parser (right) disagree"
    );

    // Every signal --help names has an entry under SIGNALS.
    let signals = section(&page, "SIGNALS");
    for word in help.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.starts_with("SIG") && word.len() > 3 {
            assert!(
                signals
                    .lines()
                    .any(|l| l.starts_with(".B ") && l.contains(word)),
                "docs/vigild.8, SIGNALS: no entry for {word} (vigild --help names it)"
            );
        }
    }

    // FILES names the default config and every unit the package ships.
    let files = section(&page, "FILES");
    assert!(
        files.contains(&format!(".I {}", vigild::config::DEFAULT_CONFIG_PATH)),
        "docs/vigild.8, FILES: no {}",
        vigild::config::DEFAULT_CONFIG_PATH
    );
    for unit in ["vigild.service", "vigild.socket", "vigild@.service"] {
        assert!(
            files.contains(&format!(".I /usr/lib/systemd/system/{unit}")),
            "docs/vigild.8, FILES: no /usr/lib/systemd/system/{unit}"
        );
    }

    // groff renders it without a warning (-ww: all of them).
    if !has("groff") {
        util::skip(
            "groff not found",
            "scripts/test installs groff-base (Debian)",
        );
        return;
    }
    let out = run(
        Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(repo().join("docs/vigild.8")),
        "groff -man docs/vigild.8",
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.trim().is_empty(),
        "groff warns about docs/vigild.8:\n{warnings}"
    );
}

/// The package's regular files, with their mode.
const FILES: &[(&str, &str)] = &[
    ("./usr/bin/vigild", "-rwxr-xr-x"),
    ("./usr/lib/systemd/system/vigild.service", "-rw-r--r--"),
    ("./usr/lib/systemd/system/vigild.socket", "-rw-r--r--"),
    ("./usr/lib/systemd/system/vigild@.service", "-rw-r--r--"),
    ("./etc/vigild/vigild.toml", "-rw-r--r--"),
    ("./usr/share/man/man8/vigild.8.gz", "-rw-r--r--"),
    ("./usr/share/doc/vigild/copyright", "-rw-r--r--"),
    ("./usr/share/doc/vigild/README.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/systemd.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/admin.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/detection.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/presence.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/robustness.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/status.md", "-rw-r--r--"),
    ("./usr/share/doc/vigild/status-page.png", "-rw-r--r--"),
];

/// Builds the package with `scripts/deb` and returns its path.
fn build_deb() -> PathBuf {
    let started = Instant::now();
    let out = run(&mut Command::new(repo().join("scripts/deb")), "scripts/deb");
    let printed = stdout(&out);
    let deb = PathBuf::from(printed.trim());
    eprintln!(
        "scripts/deb built {} in {:.1} s",
        deb.display(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        deb,
        repo().join(format!("target/debian/vigild_{VERSION}_amd64.deb")),
        "scripts/deb should print the package's path, and only that, on stdout"
    );
    deb
}

fn field(deb: &Path, name: &str) -> String {
    let out = run(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(name),
        &format!("dpkg-deb -f {name}"),
    );
    stdout(&out).trim().to_string()
}

#[test]
fn debian_package() {
    if !has("dpkg-deb") {
        util::skip("dpkg-deb not found", "Debian: apt-get install dpkg");
        return;
    }
    let deb = build_deb();

    // Control fields.
    assert_eq!(field(&deb, "Package"), "vigild");
    assert_eq!(field(&deb, "Version"), VERSION);
    assert_eq!(field(&deb, "Architecture"), "amd64");
    assert_eq!(field(&deb, "Section"), "net");
    assert_eq!(field(&deb, "Priority"), "optional");
    assert!(!field(&deb, "Maintainer").is_empty(), "no Maintainer field");
    assert!(
        field(&deb, "Description").starts_with("Keeps long-lived TCP sessions"),
        "Description: {}",
        field(&deb, "Description")
    );
    // The binary links libc only: any other dependency is a surprise to look at.
    let depends = field(&deb, "Depends");
    let names: Vec<&str> = depends
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["libc6"], "Depends: {depends}");

    // Contents: these files, these modes, owned by root, and no others.
    let listing = stdout(&run(
        Command::new("dpkg-deb").arg("-c").arg(&deb),
        "dpkg-deb -c",
    ));
    let mut seen = Vec::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (cols[0], cols[1], cols[cols.len() - 1]);
        assert_eq!(owner, "0/0", "{path} is not owned by root: {line}");
        if mode.starts_with('d') {
            continue;
        }
        let expected = FILES.iter().find(|(p, _)| *p == path);
        assert_eq!(
            expected.map(|(_, m)| *m),
            Some(mode),
            "{path}: unexpected in the package, or with the wrong mode: {line}"
        );
        seen.push(path.to_string());
    }
    for (path, _) in FILES {
        assert!(
            seen.iter().any(|p| p == path),
            "{path} is missing from the package"
        );
    }

    // Control archive: the conffile and the maintainer scripts, executable and valid sh, the
    // ones in debian/.
    let tmp = TempDir::new("deb");
    let control = tmp.path().join("control");
    run(
        Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control),
        "dpkg-deb -e",
    );
    assert_eq!(
        fs::read_to_string(control.join("conffiles")).expect("a conffiles member"),
        "/etc/vigild/vigild.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let packaged = fs::read(&path).unwrap_or_else(|e| panic!("no {script}: {e}"));
        assert_eq!(
            packaged,
            fs::read(repo().join("debian").join(script)).unwrap(),
            "{script} differs from debian/{script}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable ({mode:o})");
        run(
            Command::new("sh").arg("-n").arg(&path),
            &format!("sh -n {script}"),
        );
    }
    assert!(!control.join("preinst").exists(), "an unexpected preinst");

    // The data: the repository's units, config and man page; the binary runs and accepts the
    // packaged config.
    let root = tmp.path().join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    );
    for unit in ["vigild.service", "vigild.socket", "vigild@.service"] {
        let packaged = fs::read_to_string(root.join("usr/lib/systemd/system").join(unit)).unwrap();
        assert_eq!(
            packaged,
            fs::read_to_string(repo().join("systemd").join(unit)).unwrap(),
            "the packaged {unit} differs from systemd/{unit}"
        );
        for line in packaged.lines().filter(|l| l.starts_with("Exec")) {
            let program = line
                .split('=')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            assert!(
                program == "/usr/bin/vigild" || program == "/bin/kill",
                "{unit}: {line}: the package installs vigild as /usr/bin/vigild"
            );
        }
    }
    assert_eq!(
        fs::read(root.join("etc/vigild/vigild.toml")).unwrap(),
        fs::read(repo().join("config/vigild.toml")).unwrap(),
        "the packaged config differs from config/vigild.toml"
    );
    let man = run(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man8/vigild.8.gz")),
        "gzip -dc vigild.8.gz",
    );
    assert_eq!(
        man.stdout,
        fs::read(repo().join("docs/vigild.8")).unwrap(),
        "the packaged man page differs from docs/vigild.8"
    );
    let bin = root.join("usr/bin/vigild");
    let version = stdout(&run(
        Command::new(&bin).arg("--version"),
        "packaged vigild --version",
    ));
    assert_eq!(version.trim(), format!("vigild {VERSION}"));
    run(
        Command::new(&bin)
            .arg("--check-config")
            .arg(root.join("etc/vigild/vigild.toml")),
        "packaged vigild --check-config on the packaged config",
    );
    // Stripped (profile.deb): no symbol table, no debug info.
    let sections = stdout(&run(
        Command::new("readelf").arg("-S").arg("-W").arg(&bin),
        "readelf -S usr/bin/vigild",
    ));
    for name in [".symtab", ".debug_info"] {
        assert!(
            !sections.contains(name),
            "usr/bin/vigild is not stripped: it has {name}"
        );
    }
}

/// A throwaway dpkg database and root for `dpkg --root`, with recording stand-ins for the
/// systemd tools the maintainer scripts call.
struct Sandbox {
    _tmp: TempDir,
    root: PathBuf,
    stubs: PathBuf,
    log: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = TempDir::new("dpkg-root");
        let root = tmp.path().join("root");
        let dpkg = root.join("var/lib/dpkg");
        fs::create_dir_all(dpkg.join("updates")).unwrap();
        fs::create_dir_all(dpkg.join("info")).unwrap();
        // libc6 "installed" at this machine's version, so Depends resolves as it would here.
        let libc = run(
            Command::new("dpkg-query").args(["-W", "-f=${Version}", "libc6"]),
            "dpkg-query libc6",
        );
        fs::write(
            dpkg.join("status"),
            format!(
                "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
                 Section: libs\nMaintainer: test <test@localhost>\nArchitecture: amd64\n\
                 Version: {}\nDescription: stand-in for this machine's libc6\n\n",
                stdout(&libc).trim()
            ),
        )
        .unwrap();
        fs::write(dpkg.join("info/libc6.list"), "").unwrap();
        let stubs = tmp.path().join("bin");
        fs::create_dir(&stubs).unwrap();
        // Each tool records its call. `was-enabled` says yes unless the operator "disabled"
        // the service (the file disabled beside the log), as deb-systemd-helper does.
        let stub = "#!/bin/sh\n\
                    echo \"$(basename \"$0\") $*\" >>\"$VIGILD_TEST_LOG\"\n\
                    case \"$*\" in *was-enabled*) [ ! -e \"$VIGILD_TEST_LOG.disabled\" ] ;; esac\n";
        for tool in ["systemctl", "deb-systemd-helper", "deb-systemd-invoke"] {
            let path = stubs.join(tool);
            fs::write(&path, stub).unwrap();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let log = tmp.path().join("calls");
        Sandbox {
            _tmp: tmp,
            root,
            stubs,
            log,
        }
    }

    /// Runs `dpkg --root` with `args` in a private mount namespace whose /run is a fresh
    /// tmpfs, holding /run/systemd/system ("systemd is running", to the scripts) when
    /// `booted`; returns the calls the maintainer scripts made, one per line.
    fn dpkg(&self, booted: bool, args: &[&str]) -> Vec<String> {
        let _ = fs::remove_file(&self.log);
        let setup = "mount -t tmpfs vigild-test /run && \
                     if [ \"$VIGILD_TEST_BOOTED\" = 1 ]; then mkdir -p /run/systemd/system; fi && \
                     exec \"$@\"";
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            setup,
            "sh",
        ])
        .arg("dpkg")
        .arg(format!("--root={}", self.root.display()))
        // The scripts run on this machine, not chrooted (the root has no /bin/sh), and
        // reach nothing of it but the recording tools.
        .args(["--force-script-chrootless", "--log=/dev/null"])
        .args(args)
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.stubs.display()),
        )
        .env("VIGILD_TEST_LOG", &self.log)
        .env("VIGILD_TEST_BOOTED", if booted { "1" } else { "0" });
        run(&mut cmd, &format!("dpkg {}", args.join(" ")));
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    fn status(&self) -> String {
        let out = Command::new("dpkg-query")
            .arg(format!("--root={}", self.root.display()))
            .args(["-W", "-f=${db:Status-Abbrev}${Version}", "vigild"])
            .output()
            .expect("run dpkg-query");
        stdout(&out).trim().to_string()
    }
}

/// The package with another version and `extra` appended to its config, for an upgrade.
fn repackaged(deb: &Path, dir: &Path, version: &str, extra: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    run(
        Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree),
        "dpkg-deb -R",
    );
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap().replace(
        &format!("\nVersion: {VERSION}\n"),
        &format!("\nVersion: {version}\n"),
    );
    fs::write(&control, text).unwrap();
    let config = tree.join("etc/vigild/vigild.toml");
    let mut body = fs::read_to_string(&config).unwrap();
    body.push_str(extra);
    fs::write(&config, body).unwrap();
    let out = dir.join(format!("vigild_{version}_amd64.deb"));
    run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&out),
        "dpkg-deb -b",
    );
    out
}

#[test]
fn dpkg_installs_upgrades_removes_and_purges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        util::skip(
            "not root: dpkg runs in a private mount namespace",
            "run the suite as root (CI does)",
        );
        return;
    }
    if !has("dpkg") || !has("unshare") {
        util::skip("dpkg or unshare not found", "Debian: dpkg, util-linux");
        return;
    }
    let deb = build_deb();
    let sb = Sandbox::new();
    let deb_s = deb.to_str().unwrap();
    let shipped = fs::read_to_string(repo().join("config/vigild.toml")).unwrap();

    // First install under a running systemd: vigild.service enabled and started, and only it.
    assert_eq!(
        sb.dpkg(true, &["-i", deb_s]),
        [
            "deb-systemd-helper unmask vigild.service",
            "deb-systemd-helper --quiet was-enabled vigild.service",
            "deb-systemd-helper enable vigild.service",
            "systemctl --system daemon-reload",
            "deb-systemd-invoke start vigild.service",
        ]
    );
    assert_eq!(sb.status(), format!("ii {VERSION}"));
    for (path, _) in FILES {
        assert!(sb.path(path).exists(), "{path} not installed");
    }
    assert_eq!(
        fs::read_to_string(sb.path("etc/vigild/vigild.toml")).unwrap(),
        shipped
    );

    // The operator edits the config and disables the service; the upgrade's config changed
    // too. dpkg keeps the edit (--force-confold answers its question), puts the new file
    // beside it, leaves the service disabled and restarts whatever runs.
    let edited = format!("{shipped}# edited by the operator\n");
    fs::write(sb.path("etc/vigild/vigild.toml"), &edited).unwrap();
    fs::write(format!("{}.disabled", sb.log.display()), "").unwrap();
    let work = TempDir::new("deb-upgrade");
    let next = format!("{VERSION}+upgrade1");
    let upgrade = repackaged(&deb, work.path(), &next, "# new in the upgrade\n");
    assert_eq!(
        sb.dpkg(true, &["--force-confold", "-i", upgrade.to_str().unwrap()]),
        [
            // the old postrm, after the new files are unpacked
            "systemctl --system daemon-reload",
            "deb-systemd-helper unmask vigild.service",
            "deb-systemd-helper --quiet was-enabled vigild.service",
            "deb-systemd-helper update-state vigild.service",
            "systemctl --system daemon-reload",
            "deb-systemd-invoke restart vigild.service",
            "systemctl --system try-restart vigild@*.service",
        ],
        "an upgrade stops nothing before the new files are in place, then restarts"
    );
    assert_eq!(sb.status(), format!("ii {next}"));
    assert_eq!(
        fs::read_to_string(sb.path("etc/vigild/vigild.toml")).unwrap(),
        edited,
        "the upgrade replaced an edited conffile"
    );
    assert!(
        fs::read_to_string(sb.path("etc/vigild/vigild.toml.dpkg-dist"))
            .is_ok_and(|t| t.ends_with("# new in the upgrade\n")),
        "the upgrade's config is not beside the kept one as vigild.toml.dpkg-dist"
    );

    // Removal: the socket stops before the service (no connection restarts it), then every
    // instance; the files go, the config stays.
    assert_eq!(
        sb.dpkg(true, &["-r", "vigild"]),
        [
            "deb-systemd-invoke stop vigild.socket vigild.service",
            "systemctl --system stop vigild@*.service",
            "systemctl --system daemon-reload",
            "deb-systemd-helper mask vigild.service",
        ]
    );
    assert_eq!(sb.status(), format!("rc {next}"));
    for (path, _) in FILES.iter().filter(|(p, _)| !p.starts_with("./etc/")) {
        assert!(!sb.path(path).exists(), "{path} left after dpkg -r");
    }
    assert_eq!(
        fs::read_to_string(sb.path("etc/vigild/vigild.toml")).unwrap(),
        edited,
        "dpkg -r removed the config"
    );

    // Purge: the config, its .dpkg-dist and /etc/vigild go; the enablement is forgotten.
    assert_eq!(
        sb.dpkg(true, &["--purge", "vigild"]),
        [
            "systemctl --system daemon-reload",
            "deb-systemd-helper purge vigild.service",
            "deb-systemd-helper unmask vigild.service",
        ]
    );
    assert!(
        !sb.path("etc/vigild").exists(),
        "/etc/vigild left after --purge"
    );
    assert_eq!(sb.status(), "", "vigild still known to dpkg after --purge");

    // An install without a running systemd (an image build, a chroot): enabled, not started.
    let _ = fs::remove_file(format!("{}.disabled", sb.log.display()));
    assert_eq!(
        sb.dpkg(false, &["-i", deb_s]),
        [
            "deb-systemd-helper unmask vigild.service",
            "deb-systemd-helper --quiet was-enabled vigild.service",
            "deb-systemd-helper enable vigild.service",
        ]
    );
}
