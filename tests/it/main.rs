//! The one integration test binary: modules per feature, helpers in `support`.

mod bearer;
mod config;
mod crafted;
mod deploy;
mod dev;
mod examples;
mod first_run;
mod forward_auth;
mod id_token;
mod identity;
mod lifecycle;
mod local;
mod logout;
mod nginx;
mod oidc;
mod policy;
mod presets;
mod providers;
mod proxy;
mod redirect;
mod refresh;
mod saml;
mod saml_check;
mod saml_prop;
mod support;
mod tidy;
