//! The README's run command and `qupiactl demo`, as a newcomer runs them: `dev up` in
//! one process, the demo against it from another. Afterwards the suite's databases and
//! everything it printed hold none of the demo people's data.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qupia_test_support::scan_bytes;

/// What the demo registers, as it could leak: names, e-mail local parts (each run adds a
/// suffix), and phones in E.164 and in their national digits.
const NEEDLES: &[&str] = &[
    "Нұрланова",
    "Әйгерім",
    "Серікқызы",
    "aigerim.nurlanova",
    "+77011234567",
    "7011234567",
    "Жұмабаев",
    "Ерлан",
    "erlan.zhumabayev",
    "+77052345678",
    "Ахметова",
    "dana.akhmetova",
    "Сейітов",
    "nurlan.seitov",
    "Иванова",
    "m.ivanova",
    "viktor.kim",
    "O'Brien",
    "aoife.obrien",
    "Schmidt",
    "jonas.schmidt",
    "Rossi",
    "giulia.rossi",
    "+77719012345",
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `dev up`, stopped with Ctrl-C (SIGINT) when dropped.
struct DevUp {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Drop for DevUp {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a child's output stream, line by line.
fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
            let mut all = into.lock().expect("lock");
            all.extend_from_slice(&line);
            all.push(b'\n');
        }
    });
}

#[test]
fn dev_up_and_the_demo_tell_the_whole_story_without_leaking() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dev_dir = dir.path().join(".qupia-dev");
    let ports: Vec<String> = (0..4).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let (vault, gateway, accounts, marketing) = (&ports[0], &ports[1], &ports[2], &ports[3]);
    let common = |command: &mut Command| {
        command
            .current_dir(dir.path())
            .env("QUPIA_DEV_DIR", &dev_dir)
            .env("RUST_LOG", "debug")
            .env_remove("QUPIA_AS")
            .args(["--gateway", gateway, "--accounts-addr", accounts, "--marketing-addr", marketing]);
    };

    let mut up = Command::new(env!("CARGO_BIN_EXE_qupiactl"));
    common(&mut up);
    let mut child = up
        .args(["dev", "up", "--vault-addr", vault, "--gateway-addr", gateway])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qupiactl dev up");
    let output = Arc::new(Mutex::new(Vec::new()));
    collect(child.stdout.take().expect("stdout"), output.clone());
    collect(child.stderr.take().expect("stderr"), output.clone());
    let suite = DevUp { child, output: output.clone() };

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let printed = String::from_utf8_lossy(&suite.output.lock().expect("lock")).into_owned();
        if printed.contains("Press Ctrl-C to stop.") {
            for endpoint in [vault, gateway, accounts, marketing] {
                assert!(printed.contains(&format!("https://{endpoint}")), "dev up prints {endpoint}: {printed}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "dev up did not come up: {printed}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut demo = Command::new(env!("CARGO_BIN_EXE_qupiactl"));
    common(&mut demo);
    let demo = demo.arg("demo").output().expect("run qupiactl demo");
    let told = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "the demo failed: {told}\n{}", String::from_utf8_lossy(&demo.stderr));
    for line in [
        "sent 0   skipped without consent 9",
        "sent 1   skipped without consent 8",
        "PERMISSION_DENIED: no policy permits spiffe://qupia/ns/default/sa/marketing to see surname",
        "mail.kz        6",
        "1 group(s) suppressed",
        "advertising  withdrawn",
        "her person token     NotFound",
        "her scanned document NotFound",
        "intact: ",
    ] {
        assert!(told.contains(line), "the demo says {line:?}: {told}");
    }

    // The needles are what the demo really entered: its own output (shown to the person
    // herself) has them.
    assert!(scan_bytes("the demo's output", &demo.stdout, NEEDLES).len() >= 4, "the needles match the demo's people");

    drop(suite);
    // Everything dev up printed (all four services' logs, at debug), and every database
    // but the vault's ciphertexts, hold none of it. The vault's own file holds none in
    // clear either.
    let printed = output.lock().expect("lock").clone();
    assert!(printed.len() > 1000, "dev up logged at debug");
    let mut leaks = scan_bytes("dev up's output", &printed, NEEDLES);
    for name in ["accounts", "marketing", "gateway", "vault"] {
        for suffix in [".db", ".db-wal"] {
            let path = dev_dir.join(format!("{name}{suffix}"));
            if let Ok(bytes) = std::fs::read(&path) {
                leaks.extend(scan_bytes(&path.display().to_string(), &bytes, NEEDLES));
            }
        }
    }
    assert!(leaks.is_empty(), "personal data where it must not be: {leaks:?}");
}
