//! The campaign example as a newcomer runs it: `examples/campaign/run.sh`
//! builds its two apt repositories and images, puts the package cache in
//! front of them, lists libfoo's reverse dependencies and runs the A/B
//! campaign over them; it exits 0 only when the comparison is the expected
//! one (three regressions, one fix, one failing on both sides, one passing).

use std::path::Path;
use std::process::Command;

#[test]
fn the_campaign_example_finds_what_libfoo_2_breaks() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/campaign/run.sh");
    let out = Command::new(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        script.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // What the console printed: the regressions, and the cache's figures.
    assert!(
        stdout.contains("3 confirmed regressions of 6 ids"),
        "{stdout}"
    );
    assert!(stdout.contains("cache: apt "), "{stdout}");
}
