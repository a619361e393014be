use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    // A missing .env is normal; the environment alone is enough.
    let _ = dotenvy::dotenv();
    let format = match bulletin::logging::LogFormat::from_env() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    bulletin::logging::init(format);
    bulletin::cli::run(bulletin::cli::Cli::parse()).await
}

/// glibc gives threads that allocate at the same time arenas of their own (up to eight per core)
/// and each arena keeps what its threads freed: on SQLite every connection has a thread, and a
/// ten-minute soak saw Bulletin's memory grow 19 MiB over 11 MiB of live heap. Two arenas end that
/// soak at 38 instead of 46 MiB (BENCHMARKS.md). `MALLOC_ARENA_MAX` in the environment, read by
/// glibc itself, still decides when set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator, and runs before any other
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
