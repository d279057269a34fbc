use std::time::Duration;

use super::*;

#[test]
fn default_config_is_valid() {
    assert_eq!(
        RouterConfig::default().validate(),
        Ok(RouterConfig::default())
    );
}

#[test]
fn zero_timeouts_are_refused() {
    let config = RouterConfig {
        upstream_timeout: Duration::ZERO,
        ..RouterConfig::default()
    };
    assert_eq!(
        config.validate(),
        Err(ConfigError::ZeroDuration {
            field: "upstream_timeout"
        })
    );
    let config = RouterConfig {
        connect_timeout: Duration::ZERO,
        ..RouterConfig::default()
    };
    assert!(matches!(
        config.validate(),
        Err(ConfigError::ZeroDuration {
            field: "connect_timeout"
        })
    ));
}

#[test]
fn huge_values_are_refused() {
    let config = RouterConfig {
        shutdown_grace: MAX_DURATION + Duration::from_secs(1),
        ..RouterConfig::default()
    };
    assert!(matches!(
        config.validate(),
        Err(ConfigError::DurationTooLong { .. })
    ));
    let config = RouterConfig {
        max_retries: MAX_RETRIES + 1,
        ..RouterConfig::default()
    };
    assert_eq!(
        config.validate(),
        Err(ConfigError::TooManyRetries {
            got: MAX_RETRIES + 1,
            max: MAX_RETRIES
        })
    );
    let config = RouterConfig {
        max_idle_per_backend: MAX_IDLE_PER_BACKEND + 1,
        ..RouterConfig::default()
    };
    assert!(matches!(
        config.validate(),
        Err(ConfigError::PoolTooLarge { .. })
    ));
}
