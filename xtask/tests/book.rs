//! `cargo test` fails when the book is inconsistent: a chapter missing from SUMMARY.md or
//! from the doctest wiring, a missing `{{#include}}` file or anchor, an unlabeled fence, a
//! stale or malformed measured table, a figure typed by hand.

#[test]
fn the_book_is_consistent() {
    let problems = xtask::checks::run(&xtask::workspace_root());
    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        list.is_empty(),
        "the book has problems:\n{}",
        list.join("\n")
    );
}
