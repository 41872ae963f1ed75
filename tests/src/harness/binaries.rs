//! Where the workspace's binaries (`replica`, `arbiter`) are.
//!
//! End-to-end tests run the binaries built in the same target directory and
//! profile as the test executable itself: a test at
//! `target/<profile>/deps/<test>-<hash>` runs `target/<profile>/replica`.
//! Cargo builds only this package's binaries before its tests, not other
//! packages', so build them first (`cargo build --workspace --bins`, with
//! `--release` for release tests). `UNDERSTUDY_BIN_DIR` overrides the
//! directory, e.g. to test an installed build.

use std::path::{Path, PathBuf};

/// Environment variable naming the directory that holds the binaries.
pub const BIN_DIR_VAR: &str = "UNDERSTUDY_BIN_DIR";

/// The directory the binaries are taken from.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_VAR) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    profile_dir_of(&exe)
}

/// `target/<profile>` for an executable in `target/<profile>/deps/` (tests)
/// or in `target/<profile>/` itself (binaries, examples run from there).
fn profile_dir_of(exe: &Path) -> PathBuf {
    let parent = exe.parent().unwrap_or(Path::new("."));
    match parent.file_name() {
        Some(name) if name == "deps" || name == "examples" => {
            parent.parent().unwrap_or(parent).to_path_buf()
        }
        _ => parent.to_path_buf(),
    }
}

/// The path of the workspace binary `name`; panics, saying how to build it,
/// when it is not there.
pub fn binary(name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "the `{name}` binary is not at {}; build them first: cargo build --workspace --bins \
             (add --release for a release test run), or set {BIN_DIR_VAR} to the directory \
             that holds them",
            path.display()
        );
    }
    path
}

/// The `replica` binary.
pub fn replica_binary() -> PathBuf {
    binary("replica")
}

/// The `arbiter` binary.
pub fn arbiter_binary() -> PathBuf {
    binary("arbiter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_dir_is_above_deps() {
        assert_eq!(
            profile_dir_of(Path::new("/w/target/debug/deps/standalone_crash-0123abcd")),
            Path::new("/w/target/debug")
        );
        assert_eq!(
            profile_dir_of(Path::new("/w/target/release/loadgen")),
            Path::new("/w/target/release")
        );
    }

    #[test]
    #[should_panic(expected = "cargo build --workspace --bins")]
    fn a_missing_binary_says_how_to_build_it() {
        binary("no-such-understudy-binary");
    }
}
