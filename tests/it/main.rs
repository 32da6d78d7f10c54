//! The one integration test binary: modules per feature, helpers in `support`.

mod config;
mod crafted;
mod dev;
mod first_run;
mod id_token;
mod identity;
mod lifecycle;
mod oidc;
mod proxy;
mod redirect;
mod saml;
mod saml_check;
mod saml_prop;
mod support;
mod tidy;
