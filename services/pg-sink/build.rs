// `sqlx::migrate!` embeds the migrations at compile time but does not notice
// a new file on stable Rust; rebuild when the directory changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
