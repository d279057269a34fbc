fn main() {
    println!("hello from the compat suite");
}
