//! Tests that need a program the machine may lack (promtool, systemd's tools, hadolint) or
//! root (mounting a tmpfs): they skip with a printed reason on a developer's machine, and fail
//! in CI, where `PGKEEP_TEST_REQUIRE_TOOLS=1` says every one must be there — a test that passes
//! by skipping is no test.

/// The switch that turns a missing program into a failure.
pub const REQUIRE_TOOLS: &str = "PGKEEP_TEST_REQUIRE_TOOLS";

/// `Some(value)` as given; when `None`, panics if `PGKEEP_TEST_REQUIRE_TOOLS=1`, else prints
/// "SKIPPED: {why}" and returns `None` for the caller to return.
pub fn required<T>(found: Option<T>, why: &str) -> Option<T> {
    if found.is_some() {
        return found;
    }
    assert!(
        std::env::var(REQUIRE_TOOLS).as_deref() != Ok("1"),
        "{REQUIRE_TOOLS}=1 but {why} (scripts/test-deps.sh installs what the tests need)"
    );
    eprintln!("SKIPPED: {why} (scripts/test-deps.sh installs what the tests need)");
    None
}

/// A program on `PATH`, required as `required` says.
pub fn program(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    required(found, &format!("{name} is not installed"))
}
