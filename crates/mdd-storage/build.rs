//! `sqlx::migrate!` embeds the migrations at compile time: a new or changed migration file
//! must rebuild the crate, or a binary would run without it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
