use super::*;

#[test]
fn names_derived_from_the_image_as_gitlab_does() {
    assert_eq!(
        derived_aliases("tutum/wordpress:latest"),
        ["tutum__wordpress", "tutum-wordpress"]
    );
    assert_eq!(derived_aliases("postgres:16"), ["postgres"]);
    assert_eq!(derived_aliases("redis"), ["redis"]);
    assert_eq!(
        derived_aliases("registry.example.com:5000/group/svc:1.2"),
        [
            "registry.example.com__group__svc",
            "registry.example.com-group-svc"
        ]
    );
    assert_eq!(
        derived_aliases("berth/busybox@sha256:0123abcd"),
        ["berth__busybox", "berth-busybox"]
    );
    // Nothing usable as a host name: no derived name.
    assert!(derived_aliases("").is_empty());
}

fn spec(name: &str, aliases: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
        entrypoint: None,
        command: None,
        variables: vec![
            VarDef {
                name: "OWN".into(),
                value: "$JOB_VAR-own".into(),
                expand: true,
            },
            VarDef {
                name: "RAW".into(),
                value: "$JOB_VAR".into(),
                expand: false,
            },
            VarDef {
                name: "SHARED".into(),
                value: "service".into(),
                expand: true,
            },
        ],
    }
}

#[test]
fn planned_services_get_the_job_variables_then_their_own() {
    let vars = BTreeMap::from([
        ("JOB_VAR".to_string(), "job".to_string()),
        ("SHARED".to_string(), "job".to_string()),
        ("TAG".to_string(), "16".to_string()),
    ]);
    let planned = plan_services(
        &[
            spec("postgres:$TAG", &["db"]),
            spec("postgres:15", &["old"]),
        ],
        &vars,
    );
    assert_eq!(planned[0].name, "postgres:16");
    assert_eq!(planned[0].aliases, ["postgres", "db"]);
    // The second postgres does not take the first one's derived name.
    assert_eq!(planned[1].aliases, ["old"]);
    let v = &planned[0].variables;
    assert_eq!(v["JOB_VAR"], "job");
    assert_eq!(v["OWN"], "job-own");
    assert_eq!(v["RAW"], "$JOB_VAR");
    assert_eq!(v["SHARED"], "service");
}
