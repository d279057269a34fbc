//! `services:`: parsed at job level, in `default:` and globally, planned
//! with derived host names and the job's variables; what berth cannot
//! honour is refused at lint.

mod common;

use common::*;

#[test]
fn job_services_in_both_forms() {
    let text = r#"
job:
  image: berth/busybox:latest
  variables: {GREETING: hello}
  script: x
  services:
    - redis:7
    - name: berth/busybox:latest
      alias: web, www  site
      entrypoint: ["/bin/sh", "-c"]
      command: ["httpd -f -p 8080"]
      variables: {PORT: "8080", MSG: "$GREETING world"}
"#;
    let p = plan(text, &push_main());
    let s = &job(&p, "job").services;
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "redis:7");
    assert_eq!(s[0].aliases, ["redis"]);
    assert_eq!(s[0].entrypoint, None);
    assert_eq!(s[0].variables["GREETING"], "hello");
    assert_eq!(s[1].name, "berth/busybox:latest");
    assert_eq!(
        s[1].aliases,
        ["berth__busybox", "berth-busybox", "web", "www", "site"]
    );
    assert_eq!(
        s[1].entrypoint.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".to_string()][..])
    );
    assert_eq!(
        s[1].command.as_deref(),
        Some(&["httpd -f -p 8080".to_string()][..])
    );
    assert_eq!(s[1].variables["PORT"], "8080");
    assert_eq!(s[1].variables["MSG"], "hello world");
    assert_eq!(s[1].variables["CI_JOB_NAME"], "job");
}

#[test]
fn default_and_global_services_apply_unless_the_job_has_its_own() {
    let text = r#"
image: berth/busybox:latest
default:
  services: [postgres]
a:
  script: x
b:
  script: x
  services: [mysql]
"#;
    assert!(warnings(text).is_empty(), "{:?}", warnings(text));
    let p = plan(text, &push_main());
    assert_eq!(job(&p, "a").services[0].name, "postgres");
    assert_eq!(job(&p, "b").services.len(), 1);
    assert_eq!(job(&p, "b").services[0].name, "mysql");
    // The deprecated global keyword.
    let p = plan(
        "image: alpine\nservices: [redis]\na:\n  script: x\n",
        &push_main(),
    );
    assert_eq!(job(&p, "a").services[0].aliases, ["redis"]);
}

#[test]
fn a_shell_job_with_services_is_refused() {
    assert_error(
        "job:\n  script: x\n  services: [redis]\n",
        1,
        1,
        "the job `job` has `services` but no `image`: service containers run only next to a \
         Docker job (a job without `image` runs as a shell process); add `image:`",
    );
    // Through `default:` as well.
    assert_error(
        "default:\n  services: [redis]\njob:\n  script: x\n",
        3,
        1,
        "the job `job` has `services` but no `image`",
    );
}

#[test]
fn what_berth_cannot_honour_is_refused() {
    let with = |extra: &str| {
        format!(
            "job:\n  image: alpine\n  script: x\n  services:\n    - name: redis\n      {extra}\n"
        )
    };
    assert_error(
        &with("pull_policy: always"),
        6,
        20,
        "`services:pull_policy` `always` is not supported: berth pulls a service's image only when it is missing",
    );
    assert!(warnings(&with("pull_policy: if-not-present")).is_empty());
    assert_error(
        &with("docker: {user: nobody}"),
        6,
        7,
        "`services:docker` (platform, user) is not supported",
    );
    assert_error(
        &with("ports: [6379]"),
        6,
        7,
        "`services:ports` is not supported",
    );
    let w = warnings(&with("kubernetes: {user: '1000'}"));
    assert!(
        w.iter()
            .any(|w| w.starts_with("6:7: warning: `services:kubernetes` is ignored")),
        "{w:?}"
    );
    assert_error(
        &with("alias: 'web/1'"),
        6,
        14,
        "`services:alias` `web/1` is not a host name",
    );
    assert_error(&with("alias: ' , '"), 6, 14, "`services:alias` is empty");
    assert_error(
        &with("aliass: web"),
        6,
        7,
        "unknown key `aliass` in a `services` entry; did you mean `alias`?",
    );
    assert_error(
        "job:\n  image: alpine\n  script: x\n  services:\n    - alias: web\n",
        5,
        7,
        "a `services` entry needs a `name` (its image)",
    );
    assert_error(
        "job:\n  image: alpine\n  script: x\n  services: redis\n",
        4,
        13,
        "`services` must be a list of images or mappings with `name`",
    );
    assert_error(
        "job:\n  image: alpine\n  script: x\n  services:\n    - {name: a, alias: db}\n    - {name: b, alias: db}\n",
        1,
        1,
        "the job `job` gives the alias `db` to two services",
    );
    let many = format!(
        "job:\n  image: alpine\n  script: x\n  services: [{}]\n",
        vec!["redis"; 17].join(", ")
    );
    assert_error(
        &many,
        4,
        13,
        "`services` lists 17 services; at most 16 are allowed",
    );
}
