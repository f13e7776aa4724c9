// `sqlx::migrate!` (in `testing`) embeds pg-sink's migrations at compile
// time but does not notice a new file on stable Rust; rebuild when the
// directory changes.
fn main() {
    println!("cargo:rerun-if-changed=../pg-sink/migrations");
}
