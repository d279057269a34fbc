//! A service's live route: its backends and balancing state for one table
//! version, and the slot listeners read it from.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::backend::{BackendState, InFlight};
use crate::balance::{Picker, Scope};
use crate::config::RouterConfig;
use crate::stats::AppCounters;

/// What one listener serves, HTTP or TCP alike.
#[derive(Debug)]
pub(crate) struct ListenerCtx {
    pub(crate) slot: Arc<Slot>,
    pub(crate) serve: Serve,
    pub(crate) config: Arc<RouterConfig>,
}

/// The route of one service for one applied table.
#[derive(Debug)]
pub(crate) struct Route {
    /// The version a preview port serves, if the service has one.
    pub(crate) preview: Option<String>,
    pub(crate) backends: Vec<Arc<BackendState>>,
    picker: Mutex<Picker>,
    pub(crate) counters: Arc<AppCounters>,
}

/// Where a listener finds its service's current route; an apply swaps the
/// route in place, so open client connections follow table changes.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    route: RwLock<Option<Arc<Route>>>,
}

impl Slot {
    pub(crate) fn current(&self) -> Option<Arc<Route>> {
        self.route
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, route: Option<Arc<Route>>) {
        *self.route.write().unwrap_or_else(PoisonError::into_inner) = route;
    }
}

/// Which listener of a service: the weighted service port, or the preview
/// port serving the route's preview version.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Serve {
    Weighted,
    Preview,
}

impl Route {
    pub(crate) fn new(
        preview: Option<String>,
        backends: Vec<Arc<BackendState>>,
        picker: Picker,
        counters: Arc<AppCounters>,
    ) -> Route {
        Route {
            preview,
            backends,
            picker: Mutex::new(picker),
            counters,
        }
    }

    /// Chooses a routed backend not in `tried` and counts the new request
    /// on it. A backend found unrouted (a later apply removed it) joins
    /// `tried` and the choice goes on.
    pub(crate) fn choose(
        &self,
        serve: Serve,
        prefer: Option<&str>,
        tried: &mut Vec<usize>,
    ) -> Option<(usize, InFlight)> {
        loop {
            let scope = match serve {
                Serve::Weighted => Scope::Weighted,
                Serve::Preview => Scope::Only(self.preview.as_deref()?),
            };
            let index = {
                let mut picker = self.picker.lock().unwrap_or_else(PoisonError::into_inner);
                picker.pick(
                    scope,
                    prefer,
                    &|i| !tried.contains(&i) && self.backends[i].is_routed(),
                    &|i| self.backends[i].in_flight(),
                )?
            };
            match self.backends[index].acquire() {
                Some(guard) => return Some((index, guard)),
                None => tried.push(index),
            }
        }
    }
}

/// The tries of one request or connection: the first backend, then up to
/// `max_retries` others, each preferring the version of the one before.
///
/// A request may have read its route just before an apply replaced it; if
/// that route has no backend left (the apply unrouted them all), the tries
/// go on with the slot's current route, so a table change never turns into
/// a "no backend" answer.
#[derive(Debug)]
pub(crate) struct Tries<'a> {
    slot: &'a Slot,
    route: Arc<Route>,
    serve: Serve,
    max_retries: u32,
    tried: Vec<usize>,
    attempts: usize,
    prefer: Option<String>,
}

impl<'a> Tries<'a> {
    pub(crate) fn new(route: Arc<Route>, ctx: &'a ListenerCtx) -> Tries<'a> {
        Tries {
            slot: &ctx.slot,
            route,
            serve: ctx.serve,
            max_retries: ctx.config.max_retries,
            tried: Vec::new(),
            attempts: 0,
            prefer: None,
        }
    }

    /// How many backends were tried so far.
    pub(crate) fn count(&self) -> usize {
        self.attempts
    }

    /// The next backend to try, counted in flight; `None` when the tries
    /// are used up or no backend is left.
    pub(crate) fn next_backend(&mut self) -> Option<(Arc<BackendState>, InFlight)> {
        if self.attempts > self.max_retries as usize {
            return None;
        }
        let (index, guard) = loop {
            let prefer = self.prefer.as_deref();
            if let Some(chosen) = self.route.choose(self.serve, prefer, &mut self.tried) {
                break chosen;
            }
            let newer = self.slot.current()?;
            if Arc::ptr_eq(&newer, &self.route) {
                return None;
            }
            // Backends of the old route that were tried are not in the
            // new one's index space; a retry there starts afresh.
            self.route = newer;
            self.tried.clear();
        };
        if self.attempts > 0 {
            self.route.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.attempts += 1;
        self.tried.push(index);
        let backend = self.route.backends[index].clone();
        self.prefer = Some(backend.version.clone());
        Some((backend, guard))
    }
}

#[cfg(test)]
mod tests;
