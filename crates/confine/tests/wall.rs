//! The second wall, proved from inside a confined process: this test binary (no libtest harness, so it has one
//! thread when it starts, as `wasmagent` does) applies the same baseline [`Plan`] the CLI starts from plus one
//! writable directory, then tries what an attacker who escaped the WebAssembly sandbox into host code would try.
//! Each attempt must be refused by the kernel with the errno of the layer that refuses it (Landlock: `EACCES`;
//! seccomp: `EPERM`), and the work a server does (files it was given, threads, loopback TCP and UDP) must still work.
//! Before confinement the same attempts succeed, so every refusal below is the wall's doing.

#[cfg(target_os = "linux")]
fn main() {
    wall::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("0 passed, 0 failed");
}

#[cfg(target_os = "linux")]
mod wall {
    use rustix::net::{AddressFamily, SocketType, ipproto};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::path::Path;
    use wasmagent_confine::{LandlockState, Plan, SeccompState, begin};

    struct Tally {
        passed: usize,
        failed: usize,
    }

    impl Tally {
        fn check(&mut self, name: &str, ok: Result<(), String>) {
            match ok {
                Ok(()) => {
                    self.passed += 1;
                    println!("test wall::{name} ... ok");
                }
                Err(why) => {
                    self.failed += 1;
                    println!("test wall::{name} ... FAILED: {why}");
                }
            }
        }
    }

    /// `Ok` when `result` failed with `errno`.
    fn refused<T>(result: std::io::Result<T>, errno: i32) -> Result<(), String> {
        match result {
            Ok(_) => Err("it was allowed".to_owned()),
            Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
            Err(e) => Err(format!("refused with {e}, expected errno {errno}")),
        }
    }

    fn works<T>(result: std::io::Result<T>) -> Result<(), String> {
        result.map(|_| ()).map_err(|e| format!("refused: {e}"))
    }

    fn raw_socket() -> std::io::Result<rustix::fd::OwnedFd> {
        rustix::net::socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP)).map_err(Into::into)
    }

    fn packet_socket() -> std::io::Result<rustix::fd::OwnedFd> {
        rustix::net::socket(AddressFamily::PACKET, SocketType::RAW, None).map_err(Into::into)
    }

    fn spawn() -> std::io::Result<std::process::ExitStatus> {
        std::process::Command::new("/bin/true").status()
    }

    fn mount_tmpfs(at: &Path) -> std::io::Result<()> {
        rustix::mount::mount("none", at, "tmpfs", rustix::mount::MountFlags::empty(), None).map_err(Into::into)
    }

    fn loopback_tcp() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let client = std::thread::spawn(move || -> std::io::Result<()> {
            let mut stream = TcpStream::connect(addr)?;
            stream.write_all(b"ping")
        });
        let (mut stream, _) = listener.accept()?;
        let mut got = [0u8; 4];
        stream.read_exact(&mut got)?;
        client.join().map_err(|_| std::io::Error::other("client thread panicked"))??;
        if &got == b"ping" { Ok(()) } else { Err(std::io::Error::other("wrong bytes")) }
    }

    fn loopback_udp() -> std::io::Result<()> {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let b = UdpSocket::bind("127.0.0.1:0")?;
        a.send_to(b"dns?", b.local_addr()?)?;
        let mut got = [0u8; 4];
        b.recv_from(&mut got)?;
        Ok(())
    }

    fn proc_status(field: &str) -> Option<String> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        text.lines().find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
    }

    pub(super) fn main() {
        let mut tally = Tally { passed: 0, failed: 0 };
        let (Ok(granted), Ok(outside)) = (tempfile::tempdir(), tempfile::tempdir()) else {
            println!("0 passed, 1 failed");
            std::process::exit(1);
        };
        let outside = outside.keep();
        let secret = outside.join("secret.txt");
        let given = granted.path().join("given.txt");
        let setup = std::fs::write(&secret, "secret").and_then(|()| std::fs::write(&given, "given"));
        tally.check("setup", works(setup));
        let root = rustix::process::geteuid().is_root();
        // The confined process may not remove `outside` (that is the point): a shell started now, before the wall,
        // removes it when this process closes the shell's standard input at the end.
        let cleaner = std::process::Command::new("/bin/sh")
            .args(["-c", "read _; rm -rf -- \"$0\"", &outside.display().to_string()])
            .stdin(std::process::Stdio::piped())
            .spawn();
        tally.check("setup_cleaner", cleaner.as_ref().map(|_| ()).map_err(|e| e.to_string()));

        // Before: everything below is possible, so each refusal after is the wall's.
        tally.check("before_outside_file_is_readable", works(std::fs::read(&secret)));
        tally.check("before_a_process_can_be_started", works(spawn()));
        tally.check("before_another_process_s_proc_entry_is_readable", works(std::fs::read("/proc/1/cmdline")));
        if root {
            tally.check("before_root_reads_etc_shadow", works(std::fs::read("/etc/shadow")));
            tally.check("before_root_opens_a_raw_socket", works(raw_socket()));
        }

        let mut plan = Plan::new();
        plan.write(granted.path());
        plan.make_dirs(outside.as_path());
        let started = match begin(&plan) {
            Ok(started) => started,
            Err(e) => {
                println!("test wall::begin ... FAILED: {e}");
                println!("{} passed, {} failed", tally.passed, tally.failed + 1);
                std::process::exit(1);
            }
        };
        // A thread started between the two steps: Landlock reaches it by inheritance, seccomp by TSYNC.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let early = std::thread::spawn(move || {
            let _ = wait.recv();
            (refused(std::fs::read("/etc/shadow"), libc_eacces()), refused(spawn(), libc_eperm()))
        });
        let status = match started.seal() {
            Ok(status) => status,
            Err(e) => {
                println!("test wall::seal ... FAILED: {e}");
                println!("{} passed, {} failed", tally.passed, tally.failed + 1);
                std::process::exit(1);
            }
        };
        println!("measured: {status}");
        let landlock = status.landlock == LandlockState::Enforced;
        if !landlock {
            // This kind of machine has Landlock (ABI 7 measured); in CI its absence is a failure, not a skip.
            let ci = std::env::var_os("CI").is_some();
            tally.check(
                "landlock_is_enforced",
                if ci { Err(format!("landlock is {}", status.landlock)) } else { Ok(()) },
            );
        }
        tally.check(
            "status_reports_the_wall",
            if status.seccomp == SeccompState::Enforced && status.no_new_privs && status.core_dumps_off {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            },
        );
        tally.check(
            "kernel_shows_seccomp_and_no_new_privs",
            match (proc_status("Seccomp:"), proc_status("NoNewPrivs:")) {
                (Some(s), Some(n)) if s == "2" && n == "1" => Ok(()),
                other => Err(format!("/proc/self/status says {other:?}")),
            },
        );

        if landlock {
            let eacces = libc_eacces();
            tally.check("etc_shadow_is_refused", refused(std::fs::read("/etc/shadow"), eacces));
            tally.check("etc_passwd_is_refused", refused(std::fs::read("/etc/passwd"), eacces));
            tally.check("another_process_s_proc_entry_is_refused", refused(std::fs::read("/proc/1/cmdline"), eacces));
            tally.check("own_proc_entry_is_readable", works(std::fs::read("/proc/self/cmdline")));
            tally.check("a_file_outside_the_plan_is_refused", refused(std::fs::read(&secret), eacces));
            tally.check("listing_etc_is_refused", refused(std::fs::read_dir("/etc"), eacces));
            let made_dir = outside.as_path().join("made");
            tally.check(
                "a_make_dirs_grant_allows_directories_and_nothing_else",
                works(std::fs::create_dir(&made_dir))
                    .and_then(|()| refused(std::fs::write(made_dir.join("file"), "x"), eacces))
                    .and_then(|()| works(std::fs::remove_dir(&made_dir))),
            );
            tally.check(
                "writing_outside_the_plan_is_refused",
                refused(std::fs::write(outside.as_path().join("planted"), "x"), eacces),
            );
        }
        let eperm = libc_eperm();
        tally.check("starting_a_process_is_refused", refused(spawn(), eperm));
        tally.check("a_raw_socket_is_refused", refused(raw_socket(), eperm));
        tally.check("a_packet_socket_is_refused", refused(packet_socket(), eperm));
        tally.check(
            "a_netlink_socket_is_refused",
            refused(rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None).map_err(Into::into), eperm),
        );
        tally.check("mounting_is_refused", refused(mount_tmpfs(granted.path()), eperm));

        let _ = go.send(());
        match early.join() {
            Ok((shadow, spawned)) => {
                if landlock {
                    tally.check("a_thread_started_before_the_seal_cannot_read_etc_shadow", shadow);
                }
                tally.check("a_thread_started_before_the_seal_cannot_start_a_process", spawned);
            }
            Err(_) => tally.check("early_thread", Err("panicked".to_owned())),
        }

        tally.check("a_granted_file_is_readable", works(std::fs::read(&given)));
        let made = granted.path().join("made.txt");
        let moved = granted.path().join("moved.txt");
        tally.check(
            "a_granted_directory_takes_new_files_renames_and_removals",
            works(
                std::fs::write(&made, "new")
                    .and_then(|()| std::fs::rename(&made, &moved))
                    .and_then(|()| std::fs::remove_file(&moved)),
            ),
        );
        tally.check("dev_null_is_writable", works(std::fs::write("/dev/null", "x")));
        tally.check("name_resolution_files_are_readable", works(std::fs::read("/etc/hosts")));
        tally.check("threads_and_loopback_tcp_work", works(loopback_tcp()));
        tally.check("loopback_udp_works", works(loopback_udp()));
        tally.check(
            "a_new_thread_is_confined_too",
            std::thread::spawn(move || refused(spawn(), eperm)).join().unwrap_or_else(|_| Err("panicked".to_owned())),
        );

        if let Ok(mut cleaner) = cleaner {
            drop(cleaner.stdin.take());
            let _ = cleaner.wait();
        }
        println!("{} passed, {} failed", tally.passed, tally.failed);
        if tally.failed > 0 {
            std::process::exit(1);
        }
    }

    fn libc_eacces() -> i32 {
        rustix::io::Errno::ACCESS.raw_os_error()
    }

    fn libc_eperm() -> i32 {
        rustix::io::Errno::PERM.raw_os_error()
    }
}
