//! Repository hygiene: every source file starts with a `//!` module doc saying what it owns.

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    let mut stack = vec![crate::support::repo().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                if !text.starts_with("//!") {
                    missing.push(p.display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}
