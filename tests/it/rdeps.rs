//! Reverse dependencies as a listing (`--rdeps-of PKG --deps FILE --list`)
//! against `apt-cache rdepends` on this machine's own apt lists: the same
//! packages depend directly on a library, whichever tool says so.

use std::collections::BTreeSet;
use std::process::Command;

use crate::fixtures::binary;

/// This machine's Packages files, decompressed into one file.
fn packages_file(dir: &std::path::Path) -> std::path::PathBuf {
    let lists: Vec<std::path::PathBuf> = std::fs::read_dir("/var/lib/apt/lists")
        .expect("apt lists")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.to_string_lossy().contains("_Packages"))
        .collect();
    assert!(!lists.is_empty(), "no Packages lists: run apt-get update");
    let mut all = Vec::new();
    for list in lists {
        let cat = Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&list)
            .output()
            .expect("apt-helper");
        assert!(cat.status.success(), "{list:?}");
        all.extend(cat.stdout);
        all.push(b'\n');
    }
    let path = dir.join("Packages");
    std::fs::write(&path, all).unwrap();
    path
}

/// What `apt-cache rdepends` says depends (Depends, Pre-Depends) on `package`.
fn apt_cache_rdepends(package: &str) -> BTreeSet<String> {
    let output = Command::new("apt-cache")
        .args([
            "rdepends",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            package,
        ])
        .output()
        .expect("apt-cache");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Reverse Depends:"))
        .skip(1)
        .map(|l| l.trim().trim_start_matches('|').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn direct_reverse_dependencies_are_what_apt_cache_rdepends_says() {
    let dir = tempfile::tempdir().unwrap();
    let packages = packages_file(dir.path());
    for library in ["libyaml-0-2", "liblz4-1", "libzstd1"] {
        let listed = Command::new(binary("testfleet-producer"))
            .args(["--rdeps-of", library, "--deps"])
            .arg(&packages)
            .arg("--list")
            .output()
            .expect("producer");
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let ours: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let apt = apt_cache_rdepends(library);
        assert!(!apt.is_empty(), "{library} has reverse dependencies");
        assert_eq!(ours, apt, "{library}");
    }
}

#[test]
fn deeper_reverse_dependencies_include_the_direct_ones_most_depended_upon_first() {
    let dir = tempfile::tempdir().unwrap();
    let packages = packages_file(dir.path());
    let list = |depth: &str, limit: Option<&str>| -> Vec<String> {
        let mut command = Command::new(binary("testfleet-producer"));
        command
            .args(["--rdeps-of", "libyaml-0-2", "--depth", depth, "--deps"])
            .arg(&packages)
            .arg("--list");
        if let Some(limit) = limit {
            command.args(["--limit", limit]);
        }
        let output = command.output().expect("producer");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let direct: BTreeSet<String> = list("1", None).into_iter().collect();
    let deeper = list("2", None);
    assert!(deeper.len() > direct.len());
    assert!(direct.iter().all(|p| deeper.contains(p)));
    assert_eq!(list("2", Some("5")), deeper[..5], "the first five");
}
