//! The TLS files a configuration names, loaded. Configuration is data (it
//! only points at the files); reading and parsing them happens here, with
//! errors that name the config file and the `[tls]` table, so a bad
//! certificate is refused at start-up, by `check` and on reload alike.

use super::{ServerMaterial, client_config, common_name, days_left, load_certs, subject_names};
use crate::config::{ep::EpSettings, hub::HubSettings, plan};
use anyhow::{Context, Result};
use std::sync::Arc;

/// The hub's TLS as loaded from `[tls]` (and `tls.crl`).
pub struct HubTls {
    /// CA, certificate and key, so a new CRL changes only the verifier.
    pub material: Arc<ServerMaterial>,
    /// The doors' configuration as loaded (client verifier with the CRL).
    pub server: Arc<rustls::ServerConfig>,
    /// The names and addresses in the hub's certificate.
    pub names: Vec<String>,
    /// The sooner of the hub certificate's and the CA's expiry.
    pub days_left: Option<i64>,
    /// A digest of the files as loaded, so a reload sees a change.
    pub digest: String,
    /// The revocation list `tls.crl` names, checked against the CA.
    pub crl: Option<super::crl::Crl>,
}

impl HubTls {
    pub fn load(s: &HubSettings) -> Result<HubTls> {
        let p = &s.tls_files;
        let context = || format!("{}: [tls]", s.file.display());
        let mut bytes = Vec::new();
        for f in [&p.ca, &p.cert, &p.key] {
            bytes
                .extend(crate::files::read_regular(f, crate::files::MAX_NAMED).unwrap_or_default());
        }
        bytes.extend(format!("{:?}", s.crl).into_bytes());
        let material = Arc::new(ServerMaterial::load(p).with_context(context)?);
        let crl = s
            .crl
            .as_deref()
            .map(|path| material.load_crl(path))
            .transpose()
            .with_context(|| format!("{}: tls.crl", s.file.display()))?;
        let server = material.server_config(crl.as_ref()).with_context(context)?;
        let names = load_certs(&p.cert)
            .ok()
            .and_then(|c| c.first().map(subject_names))
            .unwrap_or_default();
        let days_left = [&p.cert, &p.ca]
            .iter()
            .filter_map(|f| load_certs(f).ok()?.first().and_then(days_left))
            .min();
        Ok(HubTls {
            material,
            server,
            names,
            days_left,
            digest: plan::digest(&bytes),
            crl,
        })
    }

    /// What `ferry hub check` adds to the settings it prints.
    pub fn describe(&self) -> String {
        let mut out = match self.days_left {
            Some(days) if days < 30 => {
                format!("  hub certificate (or CA) expires in {days} days — warning: re-issue soon")
            }
            Some(days) => format!("  hub certificate (or CA) expires in {days} days"),
            None => String::new(),
        };
        if let Some(crl) = &self.crl {
            if !out.is_empty() {
                out.push('\n');
            }
            out += &format!(
                "  revocation list signed by the CA: {} certificate(s) revoked",
                crl.serials.len()
            );
        }
        out
    }
}

/// The ep's TLS as loaded from `[tls]`.
#[derive(Clone)]
pub struct EpTls {
    /// For the control and channel connections and QUIC.
    pub client: Arc<rustls::ClientConfig>,
    /// The name in the ep's certificate: who it logs in as.
    pub identity: String,
    /// A digest of the files as loaded, so a reload sees a new certificate.
    pub digest: String,
}

impl EpTls {
    pub fn load(s: &EpSettings) -> Result<EpTls> {
        let p = &s.tls_files;
        let client = client_config(&p.ca, &p.cert, &p.key)
            .with_context(|| format!("{}: [tls]", s.file.display()))?;
        // A warning, not a refusal: the clock may be wrong, and the ep
        // still serves any hub that does accept it.
        if let Some(why) = super::own_client_cert_refused(&p.ca, &p.cert) {
            tracing::warn!("tls.cert {why}");
        }
        let identity = load_certs(&p.cert)?
            .first()
            .and_then(common_name)
            .unwrap_or_else(|| "?".into());
        let mut bytes = Vec::new();
        for f in [&p.ca, &p.cert, &p.key] {
            bytes
                .extend(crate::files::read_regular(f, crate::files::MAX_NAMED).unwrap_or_default());
        }
        Ok(EpTls {
            client,
            identity,
            digest: plan::digest(&bytes),
        })
    }
}
