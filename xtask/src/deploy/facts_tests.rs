use super::*;

#[test]
fn quantities_parse_to_thousandths() {
    assert_eq!(parse_quantity("100m"), Some(100));
    assert_eq!(parse_quantity("0.1"), Some(100));
    assert_eq!(parse_quantity("2"), Some(2_000));
    assert_eq!(parse_quantity("64Mi"), Some(64 * 1024 * 1024 * 1000));
    assert_eq!(parse_quantity("1.5Gi"), Some(1536 * 1024 * 1024 * 1000));
    assert_eq!(parse_quantity("1k"), Some(1_000_000));
    assert_eq!(parse_quantity(""), None);
    assert_eq!(parse_quantity("64MB"), None);
    assert_eq!(parse_quantity("1e3"), None);
}
