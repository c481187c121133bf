use super::*;
use crate::util;

#[test]
fn xtask_subcommands_come_from_enum_cmd() {
    let main_rs = "enum Cmd {\n    /// doc\n    Setup {\n        #[arg(long)]\n        test: bool,\n    },\n    BuildEbpf,\n    VmTest {\n        kernel: String,\n    },\n}\n";
    assert_eq!(
        xtask_subcommands(main_rs),
        ["setup", "build-ebpf", "vm-test"]
    );
    let real = fs::read_to_string(util::repo_root().join("xtask/src/main.rs")).unwrap();
    assert!(xtask_subcommands(&real).contains(&"build".to_string()));
}

#[test]
fn binary_names_and_constants_are_read_from_sources() {
    assert_eq!(
        agent_binary_names("[package]\nname = \"oomwatch\"\n[[bin]]\nname = \"oomwatch\"\n"),
        ["oomwatch"]
    );
    assert_eq!(
        agent_binary_names("[package]\nname = \"agent\"\n"),
        ["agent"]
    );
    assert_eq!(
        rust_const_strings("const P: &[&str] = &[\"a\", \"b-c\"];", "P"),
        Some(vec!["a".to_string(), "b-c".to_string()])
    );
    assert_eq!(rust_const_strings("const Q: &str = \"x\";", "P"), None);
}
