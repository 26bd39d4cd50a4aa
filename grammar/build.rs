//! Generates the LR parser from src/policy.lalrpop.
fn main() {
    lalrpop::process_src().expect("lalrpop grammar generation failed");
}
