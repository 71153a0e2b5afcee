// refinery embeds the SQL files at compile time; without this a new migration is not picked up until an unrelated rebuild.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
