//! A tiny crate for `berth ci run examples/rust-crate`.

/// A greeting for `name`.
pub fn greet(name: &str) -> String {
    format!("Hello, {name}!")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        assert_eq!(greet("berth"), "Hello, berth!");
    }
}
