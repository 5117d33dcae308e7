//! The committed BPF objects are what `make -C bpf` builds from the committed sources: the
//! sources and the Makefile are copied to a temp dir (so this also shows the build does not
//! depend on where the checkout lives), rebuilt there, and compared byte for byte.

mod support;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::on_path;

fn bpf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bpf")
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read bpf dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn every_source_has_a_committed_object() {
    let sources = files_ending(&bpf_dir(), ".bpf.c");
    let objects = files_ending(&bpf_dir(), ".bpf.o");
    assert!(sources.contains(&"lb.bpf.c".to_string()), "{sources:?}");
    let expected: Vec<String> = sources
        .iter()
        .map(|name| name.replace(".bpf.c", ".bpf.o"))
        .collect();
    assert_eq!(
        objects, expected,
        "run `make -C bpf` and commit the objects"
    );
}

#[test]
fn committed_objects_match_a_rebuild_elsewhere() {
    for tool in ["clang-14", "llvm-strip-14", "make"] {
        if !on_path(tool) {
            eprintln!("skipping: {tool} not found");
            return;
        }
    }
    let src = bpf_dir();
    let work = tempfile::Builder::new()
        .prefix("berth-bpf-build-")
        .tempdir()
        .expect("tempdir");
    let build = work.path().join("somewhere/else");
    fs::create_dir_all(build.join("include")).expect("mkdir");
    fs::copy(src.join("Makefile"), build.join("Makefile")).expect("copy Makefile");
    for name in files_ending(&src, ".bpf.c") {
        fs::copy(src.join(&name), build.join(&name)).expect("copy source");
    }
    for name in files_ending(&src.join("include"), ".h") {
        fs::copy(
            src.join("include").join(&name),
            build.join("include").join(&name),
        )
        .expect("copy header");
    }
    let output = Command::new("make")
        .arg("-C")
        .arg(&build)
        .output()
        .expect("run make");
    assert!(
        output.status.success(),
        "make failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let objects = files_ending(&src, ".bpf.o");
    assert!(!objects.is_empty());
    for name in objects {
        let committed = fs::read(src.join(&name)).expect("read committed object");
        let rebuilt = fs::read(build.join(&name)).expect("read rebuilt object");
        assert!(
            committed == rebuilt,
            "bpf/{name} differs from a rebuild of its source: run `make -C bpf` and commit it"
        );
    }
}
