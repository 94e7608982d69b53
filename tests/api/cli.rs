//! The built binary, driven the way users and scripts drive it.
