//! What the node lends a plugin: a log and a clock (ABI imports `wasmkv.log`, `wasmkv.now_ms`).
//!
//! In wasm these call the host. Natively (tests, or the host linking this crate for its types)
//! log lines go to the capture the test harness sets up, else to stderr, and the clock is the
//! system clock unless the harness pinned it.

use std::fmt;

/// How important a log line is; the value is the `level` argument of the `wasmkv.log` import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something looks wrong but the plugin carries on.
    Warn = 2,
    /// Worth knowing in normal operation.
    Info = 3,
    /// Detail for whoever debugs the plugin.
    Debug = 4,
    /// Even more detail.
    Trace = 5,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        })
    }
}

/// Send one line to the node's log (the macros [`log!`](crate::log), [`info!`](crate::info), …
/// call this).
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// The node's clock: milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;

    #[link(wasm_import_module = "wasmkv")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn host_log(level: i32, ptr: *const u8, len: usize);
        #[link_name = "now_ms"]
        fn host_now_ms() -> u64;
    }

    pub(super) fn log(level: Level, message: &str) {
        // SAFETY: the host only reads `len` bytes at `ptr` during the call, and `message` is a
        // live UTF-8 slice of exactly that length.
        unsafe { host_log(level as i32, message.as_ptr(), message.len()) }
    }

    pub(super) fn now_ms() -> u64 {
        // SAFETY: takes no arguments and touches no guest memory.
        unsafe { host_now_ms() }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use std::cell::{Cell, RefCell};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::Level;

    thread_local! {
        /// Lines logged while the test harness runs a call on this thread.
        static CAPTURE: RefCell<Option<Vec<(Level, String)>>> = const { RefCell::new(None) };
        /// The clock the test harness pinned for calls on this thread.
        static PINNED_NOW: Cell<Option<u64>> = const { Cell::new(None) };
    }

    pub(super) fn log(level: Level, message: &str) {
        let captured = CAPTURE.with_borrow_mut(|capture| match capture {
            Some(lines) => {
                lines.push((level, message.to_owned()));
                true
            }
            None => false,
        });
        if !captured {
            eprintln!("[plugin {level}] {message}");
        }
    }

    pub(super) fn now_ms() -> u64 {
        PINNED_NOW.get().unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// Run `f` with log lines captured and the clock pinned to `now` (if given), returning
    /// what `f` returned and the captured lines. Used by the test harness only.
    pub(crate) fn capture<R>(now: Option<u64>, f: impl FnOnce() -> R) -> (R, Vec<(Level, String)>) {
        let outer_capture = CAPTURE.replace(Some(Vec::new()));
        let outer_now = PINNED_NOW.replace(now);
        let result = f();
        let lines = CAPTURE.replace(outer_capture).unwrap_or_default();
        PINNED_NOW.set(outer_now);
        (result, lines)
    }
}

/// Log a formatted line at a level: `log!(info, "evicted {} keys", n)`. Levels: `error`, `warn`,
/// `info`, `debug`, `trace`.
#[macro_export]
macro_rules! log {
    (error, $($arg:tt)+) => { $crate::__private::log_args($crate::Level::Error, format_args!($($arg)+)) };
    (warn, $($arg:tt)+) => { $crate::__private::log_args($crate::Level::Warn, format_args!($($arg)+)) };
    (info, $($arg:tt)+) => { $crate::__private::log_args($crate::Level::Info, format_args!($($arg)+)) };
    (debug, $($arg:tt)+) => { $crate::__private::log_args($crate::Level::Debug, format_args!($($arg)+)) };
    (trace, $($arg:tt)+) => { $crate::__private::log_args($crate::Level::Trace, format_args!($($arg)+)) };
}

/// Log a formatted line at level error (`error!("bad config: {e}")`).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!(error, $($arg)+) };
}

/// Log a formatted line at level warn.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!(warn, $($arg)+) };
}

/// Log a formatted line at level info.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!(info, $($arg)+) };
}

/// Log a formatted line at level debug.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!(debug, $($arg)+) };
}

/// Log a formatted line at level trace.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!(trace, $($arg)+) };
}
