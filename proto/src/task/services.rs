//! Validation of a task's service containers (`ContainerInfo.services`,
//! GitLab CI's `services:`): bounded counts and lengths, image references
//! as a task's own, host-name aliases, and no NUL byte anywhere a process
//! would get it.

use berth_scheduler_core::quoted;

use crate::ServiceContainer;

/// Most service containers one task may have.
pub const MAX_SERVICES: usize = 16;
/// Most aliases one service may have.
pub const MAX_ALIASES: usize = 16;
/// Longest alias, in bytes.
pub const MAX_ALIAS_BYTES: usize = 255;
/// Most entrypoint or command arguments of one service.
pub const MAX_ARGS: usize = 256;
/// Most environment variables of one service.
pub const MAX_ENV: usize = 4096;

/// A service container is unusable (see [`validate_services`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// More than [`MAX_SERVICES`].
    #[error("{count} service containers; at most {MAX_SERVICES} are allowed")]
    TooMany {
        /// How many the task has.
        count: usize,
    },
    /// Services on a network other than the bridge.
    #[error(
        "service containers need the bridge network (the task gets a network of its own); \
         network {} cannot have them",
        quoted(.network)
    )]
    NeedBridge {
        /// The task's network.
        network: String,
    },
    /// The image is empty, too long or has whitespace or control
    /// characters.
    #[error(
        "services[{index}]: image {} must be 1 to {} bytes without whitespace or control characters",
        quoted(.image),
        crate::task::MAX_IMAGE_LEN
    )]
    Image {
        /// The service's index.
        index: usize,
        /// The image as given.
        image: String,
    },
    /// More than [`MAX_ALIASES`] aliases.
    #[error("services[{index}]: {count} aliases; at most {MAX_ALIASES} are allowed")]
    TooManyAliases {
        /// The service's index.
        index: usize,
        /// How many it has.
        count: usize,
    },
    /// An alias that is not a host name Docker accepts.
    #[error(
        "services[{index}]: alias {} is not a host name (letters, digits, '.', '_' and '-', \
         starting with a letter or digit, at most {MAX_ALIAS_BYTES} bytes)",
        quoted(.alias)
    )]
    Alias {
        /// The service's index.
        index: usize,
        /// The alias as given.
        alias: String,
    },
    /// Two services (or one twice) with the same alias.
    #[error("services[{index}]: alias {} is used by an earlier service", quoted(.alias))]
    AliasTwice {
        /// The index of the later service.
        index: usize,
        /// The alias.
        alias: String,
    },
    /// Too many entrypoint or command arguments.
    #[error("services[{index}]: {field} has {count} arguments; at most {MAX_ARGS} are allowed")]
    TooManyArgs {
        /// The service's index.
        index: usize,
        /// `"entrypoint"` or `"command"`.
        field: &'static str,
        /// How many it has.
        count: usize,
    },
    /// An entrypoint or command argument with a NUL byte.
    #[error("services[{index}]: {field} argument {} contains a NUL byte", quoted(.arg))]
    ArgNul {
        /// The service's index.
        index: usize,
        /// `"entrypoint"` or `"command"`.
        field: &'static str,
        /// The argument.
        arg: String,
    },
    /// Too many environment variables.
    #[error("services[{index}]: {count} environment variables; at most {MAX_ENV} are allowed")]
    TooManyEnv {
        /// The service's index.
        index: usize,
        /// How many it has.
        count: usize,
    },
    /// An environment variable name that is empty or has '=' or NUL, or a
    /// value with NUL.
    #[error(
        "services[{index}]: environment variable {} is invalid (names must not be empty or \
         contain '=' or NUL; values must not contain NUL)",
        quoted(.name)
    )]
    Env {
        /// The service's index.
        index: usize,
        /// The variable's name.
        name: String,
    },
}

/// Whether `alias` is a host name Docker takes as a network alias.
#[must_use]
pub fn is_alias(alias: &str) -> bool {
    alias.len() <= MAX_ALIAS_BYTES
        && alias
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a task's service containers, given its network (`""`, `bridge`,
/// `host` or `none`): at most [`MAX_SERVICES`], only on the bridge network;
/// each image as a task's image; at most [`MAX_ALIASES`] aliases per
/// service, each a host name ([`is_alias`]) used by one service only; at
/// most [`MAX_ARGS`] entrypoint and command arguments without NUL; at most
/// [`MAX_ENV`] variables, named and valued as a task's.
///
/// # Errors
/// A [`ServiceError`] naming the service by its index.
pub fn validate_services(network: &str, services: &[ServiceContainer]) -> Result<(), ServiceError> {
    use ServiceError as E;
    if services.is_empty() {
        return Ok(());
    }
    if services.len() > MAX_SERVICES {
        return Err(E::TooMany {
            count: services.len(),
        });
    }
    if !matches!(network, "" | "bridge") {
        return Err(E::NeedBridge {
            network: network.to_owned(),
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (index, s) in services.iter().enumerate() {
        if s.image.is_empty()
            || s.image.len() > crate::task::MAX_IMAGE_LEN
            || s.image
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Err(E::Image {
                index,
                image: s.image.clone(),
            });
        }
        if s.aliases.len() > MAX_ALIASES {
            return Err(E::TooManyAliases {
                index,
                count: s.aliases.len(),
            });
        }
        let mut own: Vec<&str> = Vec::new();
        for alias in &s.aliases {
            if !is_alias(alias) {
                return Err(E::Alias {
                    index,
                    alias: alias.clone(),
                });
            }
            if seen.contains(&alias.as_str()) {
                return Err(E::AliasTwice {
                    index,
                    alias: alias.clone(),
                });
            }
            own.push(alias);
        }
        seen.extend(own);
        for (field, args) in [("entrypoint", &s.entrypoint), ("command", &s.command)] {
            if args.len() > MAX_ARGS {
                return Err(E::TooManyArgs {
                    index,
                    field,
                    count: args.len(),
                });
            }
            if let Some(arg) = args.iter().find(|a| a.contains('\0')) {
                return Err(E::ArgNul {
                    index,
                    field,
                    arg: arg.clone(),
                });
            }
        }
        if s.env.len() > MAX_ENV {
            return Err(E::TooManyEnv {
                index,
                count: s.env.len(),
            });
        }
        // Sorted, so that the first bad variable reported is always the same.
        let mut env: Vec<_> = s.env.iter().collect();
        env.sort();
        if let Some((name, _)) = env
            .into_iter()
            .find(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
        {
            return Err(E::Env {
                index,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(image: &str, aliases: &[&str]) -> ServiceContainer {
        ServiceContainer {
            image: image.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn err(network: &str, services: &[ServiceContainer]) -> String {
        validate_services(network, services)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_services_pass() {
        let s = vec![
            service(
                "berth/busybox:latest",
                &["berth__busybox", "berth-busybox", "web"],
            ),
            service("postgres:16", &["db.local"]),
        ];
        assert!(validate_services("", &s).is_ok());
        assert!(validate_services("bridge", &s).is_ok());
        assert!(validate_services("host", &[]).is_ok());
    }

    #[test]
    fn bad_services_are_refused_with_the_value() {
        let one = |s: ServiceContainer| err("", &[s]);
        assert_eq!(
            err("host", &[service("img", &[])]),
            "service containers need the bridge network (the task gets a network of its own); \
             network \"host\" cannot have them"
        );
        assert_eq!(
            err("", &vec![service("img", &[]); 17]),
            "17 service containers; at most 16 are allowed"
        );
        assert_eq!(
            one(service("bad image", &[])),
            "services[0]: image \"bad image\" must be 1 to 255 bytes without whitespace or control characters"
        );
        assert!(one(service("", &[])).starts_with("services[0]: image \"\" must be"));
        for bad in ["-web", "we b", "web/1", "", "ẅeb", &"a".repeat(256)] {
            let e = one(service("img", &[bad]));
            assert!(e.contains("is not a host name"), "{bad:?}: {e}");
        }
        assert_eq!(
            err("", &[service("a", &["db"]), service("b", &["db"])]),
            "services[1]: alias \"db\" is used by an earlier service"
        );
        let mut s = service("img", &[]);
        s.command = vec!["sh".into(), "a\0b".into()];
        assert_eq!(
            one(s),
            "services[0]: command argument \"a\\0b\" contains a NUL byte"
        );
        let mut s = service("img", &[]);
        s.entrypoint = vec!["x".into(); 257];
        assert_eq!(
            one(s),
            "services[0]: entrypoint has 257 arguments; at most 256 are allowed"
        );
        let mut s = service("img", &[]);
        s.env.insert("A=B".into(), "v".into());
        assert!(one(s).starts_with("services[0]: environment variable \"A=B\" is invalid"));
        let mut s = service("img", &[]);
        s.env.insert("A".into(), "v\0".into());
        assert!(one(s).starts_with("services[0]: environment variable \"A\" is invalid"));
    }
}
