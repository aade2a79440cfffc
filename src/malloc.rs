//! glibc's allocator tuned at startup, so that a backup's memory follows its live buffers.
//!
//! glibc's default mmap threshold is dynamic: once a buffer above it (128 KiB at first) is
//! freed, the threshold rises to that buffer's size, and every later buffer up to that size
//! (the compression blocks, COPY batches and chunks of 256 KiB to 8 MiB that a backup moves)
//! comes from the per-thread arenas, which keep what is freed instead of giving it back. With
//! two tables streaming at once that held about 10 MB more than was live (docs/PERFORMANCE.md).
//! A fixed threshold keeps such buffers in their own mappings, returned when freed.
//!
//! The usual environment variables still decide: a setting glibc was given at startup
//! (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`, or a `glibc.malloc.*` tunable in
//! `GLIBC_TUNABLES`) is left as it is.

/// The mmap threshold pgkeep fixes: glibc's own initial value, kept instead of raised.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// A glibc allocator setting pgkeep makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `M_MMAP_THRESHOLD`: allocations of at least this many bytes get their own mapping.
    MmapThreshold(usize),
}

impl Setting {
    /// The environment variable, and the `GLIBC_TUNABLES` name, that set the same.
    fn overrides(self) -> (&'static str, &'static str) {
        match self {
            Setting::MmapThreshold(_) => ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
        }
    }
}

/// The settings to make, given the environment (`var` looks a variable up): every default
/// setting the environment does not make itself.
pub fn settings(var: impl Fn(&str) -> Option<String>) -> Vec<Setting> {
    let tunables = var("GLIBC_TUNABLES").unwrap_or_default();
    [Setting::MmapThreshold(MMAP_THRESHOLD)]
        .into_iter()
        .filter(|s| {
            let (env, tunable) = s.overrides();
            var(env).is_none()
                && !tunables
                    .split(':')
                    .any(|t| t.split('=').next() == Some(tunable))
        })
        .collect()
}

/// Makes the default settings the process environment leaves to pgkeep. Call it first thing
/// in `main`, before any thread starts (arenas are per thread, made on first use).
pub fn tune() {
    for setting in settings(|name| std::env::var(name).ok()) {
        apply(setting);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn apply(setting: Setting) {
    let (param, value) = match setting {
        Setting::MmapThreshold(bytes) => (libc::M_MMAP_THRESHOLD, bytes),
    };
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes the allocator's parameters; it takes plain integers and
    // is safe to call at any time (it takes the arenas' locks itself). It fails only for an
    // unknown parameter, and a failed setting leaves glibc's default, which works too.
    unsafe { libc::mallopt(param, value) };
}

/// Other C libraries have other allocators, with other defaults: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply(_setting: Setting) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn the_threshold_is_fixed_unless_the_environment_sets_it() {
        assert_eq!(
            settings(env(&[])),
            vec![Setting::MmapThreshold(MMAP_THRESHOLD)]
        );
        assert_eq!(
            settings(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])),
            vec![]
        );
        assert_eq!(
            settings(env(&[(
                "GLIBC_TUNABLES",
                "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576"
            )])),
            vec![]
        );
        // Other tunables, and variables of other settings, leave the threshold to pgkeep.
        assert_eq!(
            settings(env(&[
                ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"),
                ("MALLOC_ARENA_MAX", "2")
            ])),
            vec![Setting::MmapThreshold(MMAP_THRESHOLD)]
        );
    }
}
