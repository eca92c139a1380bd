//! The certificate request an invite holder sends the enrol door
//! (`ferry::certgen::sign_request`, what the hub signs in the ep's name).
//! The first byte says how the rest is sent: as the PEM text itself, or as
//! DER the target wraps in PEM (so mutations reach the parser and the
//! signature check rather than base64). Checked:
//!
//! - no input panics or is signed without proving its key (a request that
//!   is signed is read again here and its signature checked again);
//! - whatever the request asks for, what is signed is an ep's certificate:
//!   the name the hub gives, no other names, not a CA, client use and
//!   signatures only, for the request's own key, by the hub's CA, with
//!   the serial the hub records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::sync::OnceLock;
use x509_parser::{
    certification_request::X509CertificationRequest,
    prelude::{FromDer, X509Certificate},
};

const EP: &str = "fuzz-ep";

fn ca() -> &'static (Issuer<'static, KeyPair>, Vec<u8>) {
    static CA: OnceLock<(Issuer<'static, KeyPair>, Vec<u8>)> = OnceLock::new();
    CA.get_or_init(|| {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "fuzz CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        (Issuer::new(params, key), der)
    })
}

/// The request's DER as PEM text, as an ep writes it.
fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode & 1 == 0 {
        pem_of(rest)
    } else {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        }
    };
    let (issuer, ca_der) = ca();
    let Ok((cert_pem, serial)) = ferry::certgen::sign_request(issuer, &text, EP) else {
        return;
    };

    let csr_der = pem::parse(&text).unwrap().into_contents();
    let (_, csr) = X509CertificationRequest::from_der(&csr_der).unwrap();
    csr.verify_signature()
        .expect("a request was signed whose signature is not good");

    let der = pem::parse(&cert_pem).unwrap().into_contents();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (_, ca) = X509Certificate::from_der(ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    let cns: Vec<_> = cert.subject().iter_common_name().collect();
    assert_eq!(cns.len(), 1);
    assert_eq!(cns[0].as_str().unwrap(), EP);
    assert_eq!(cert.subject().iter().count(), 1, "{}", cert.subject());
    assert!(cert.subject_alternative_name().unwrap().is_none());
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert_eq!(ku.flags, 1, "digital signature only: {ku}");
    assert_eq!(
        cert.public_key().raw,
        csr.certification_request_info.subject_pki.raw
    );
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, serial);
});
