//! The deployment planner (in progress).
