//! # iomodels-suite
//!
//! The orchestrator behind the `iomodels` binary: it runs a matrix of
//! server models × scenarios × protocols against fresh servers, measures
//! each server's own costs (cgroup, perf, /proc, valgrind), writes `results/<run-id>/`, renders
//! reports and compares result sets for CI.
//!
//! Modules: [`accounting`] (cgroup CPU and memory, perf context
//! switches), [`models`] (which servers exist), [`noise`] (the A/A noise floor), [`scenarios`] (what load),
//! [`runner`] (start, load, measure, stop), [`procfs`] (process-tree
//! accounting), [`results`] (the JSON file), [`summary`] (medians and the
//! table), [`report`] (Markdown, HTML and SVG charts), [`compare`] (the
//! regression gate and Bencher Metric Format), [`cost`] (instructions per
//! request under valgrind), [`sweep`] (rate sweeps:
//! load–latency curves and capacity at an SLO), [`charts`] (the palette,
//! legends and small multiples the report draws with), [`curves`] (the
//! sweeps' charts and tables), [`peers`] (real servers as rows),
//! [`survivors`] (no server left running), [`lab`] (teaching labs:
//! classic results, one command each, with a verdict on their shape),
//! [`netns`] and [`relay`] (`run --netns`: a network with a round-trip
//! time between generator and server), [`agents`] and [`merge`] (`run
//! --agents`: load generator agents over SSH, histograms added exactly).

pub mod accounting;
pub mod agents;
pub mod charts;
pub mod compare;
pub mod cost;
pub mod curves;
pub mod lab;
pub mod merge;
pub mod models;
pub mod netns;
pub mod noise;
pub mod peers;
pub mod procfs;
pub mod relay;
pub mod report;
pub mod results;
pub mod runner;
pub mod scenarios;
pub mod summary;
pub mod survivors;
pub mod sweep;
