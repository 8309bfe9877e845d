//! `sqlx::migrate!` embeds the migration files at compile time but does not
//! tell cargo to rebuild when a file is added to a folder; this does, so a
//! new migration is never silently missing from a warm build.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    for entry in std::fs::read_dir("../../migrations")
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
}
