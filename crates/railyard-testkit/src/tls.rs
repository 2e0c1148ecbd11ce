//! Certificates made at test time: [`TestTls::generate`] writes a private CA and one node
//! certificate for `127.0.0.1`/`localhost` (server and client use, so it serves clients and
//! authenticates cluster routes by mutual TLS), in the file names `deploy/nats` expects.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a node certificate signed by it, as PEM files in one directory.
#[derive(Debug, Clone)]
pub struct TestTls {
    /// The CA certificate: what clients trust (`RAILYARD_NATS_CA`) and routes verify.
    pub ca: PathBuf,
    /// The node certificate (`tls.crt`), valid for `127.0.0.1` and `localhost`.
    pub cert: PathBuf,
    /// Its private key (`tls.key`).
    pub key: PathBuf,
}

impl TestTls {
    /// Generates a fresh CA and node certificate into `dir` as `ca.crt`, `tls.crt` and
    /// `tls.key` (the keys of a Kubernetes TLS Secret).
    pub fn generate(dir: &Path) -> anyhow::Result<TestTls> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let ca_key = KeyPair::generate().context("cannot generate the test CA's key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "railyard test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("cannot sign the test CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let node_key = KeyPair::generate().context("cannot generate the node's key")?;
        let mut node_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        node_params
            .distinguished_name
            .push(DnType::CommonName, "railyard test nats node");
        node_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        node_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let node_cert = node_params
            .signed_by(&node_key, &issuer)
            .context("cannot sign the node certificate")?;

        let tls = TestTls {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        for (path, pem) in [
            (&tls.ca, ca_cert.pem()),
            (&tls.cert, node_cert.pem()),
            (&tls.key, node_key.serialize_pem()),
        ] {
            std::fs::write(path, pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_writes_three_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let tls = TestTls::generate(dir.path()).unwrap();
        for path in [&tls.ca, &tls.cert] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        let key = std::fs::read_to_string(&tls.key).unwrap();
        assert!(key.contains("PRIVATE KEY-----"), "{key}");
    }
}
