use super::*;

#[test]
fn validation_output_is_classified() {
    let out = "\
INFO f passed for resource namespace/oomwatch against version 1.28
INFO f passed for resource daemonset/oomwatch against version 1.28
WARN f Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1 for kubernetes version 1.28
";
    assert_eq!(
        parse_validation(out),
        Validation {
            passed: 2,
            crds: vec!["PodMonitor".into()],
            errors: vec![],
        }
    );
    // An unknown kind (a typo, or an apiVersion that no longer exists) is an error, not a pass.
    let typo = "WARN f Couldn't find schema for kind DaemonSet with api version apps/v1beta2 for kubernetes version 1.28";
    assert_eq!(parse_validation(typo).errors.len(), 1);
    let error = "ERROR f did not validate for resource daemonset/oomwatch against version 1.28: spec.template.spec.containers.0: Additional properties are not allowed ('bogus' was unexpected)";
    assert_eq!(parse_validation(error).errors, vec![error.to_string()]);
}
