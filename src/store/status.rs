//! Figures for the status page (being built).
