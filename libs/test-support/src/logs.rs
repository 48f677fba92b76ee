//! Everything a test binary's services log, captured at debug level so that tests can
//! scan it for personal data that must never be there.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The log of every service started in this test process, from the first call on (a
/// process has one global subscriber: the first caller installs it).
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

/// The captured log as text.
pub fn captured_log_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
