//! [`ScramAuthenticator`]: SCRAM-SHA-256 enhanced authentication for `mqttx-client`.

use std::sync::{Arc, Mutex};

use mqttx_client::{Authenticator, ConnectOptions};

use crate::scram::{self, ScramClient, ScramError};

/// Answers a broker's SCRAM-SHA-256 challenge for one user.
///
/// [`apply`](Self::apply) puts the method, the client-first message and the authenticator
/// into [`ConnectOptions`]; every (re)connection then runs the exchange. For
/// re-authentication, send [`restart`](Self::restart)'s message with
/// `Client::reauthenticate`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use mqttx_auth::ScramAuthenticator;
/// use mqttx_client::{Client, ConnectOptions};
///
/// let mut options = ConnectOptions::new("127.0.0.1", 1883, "sensor-1");
/// let scram = ScramAuthenticator::new("alice", "correct horse")?;
/// scram.apply(&mut options);
/// let (client, _events) = Client::connect(options).await?;
/// // Later, prove the credentials again without reconnecting:
/// client.reauthenticate(scram.restart()?).await?;
/// # Ok(()) }
/// ```
///
/// The server's final signature travels in the CONNACK, which `mqttx-client` does not hand
/// to authenticators: the server is authenticated by the TLS layer, not by SCRAM's final
/// step. The client-first message is reused on reconnection (the server adds its own nonce
/// each time).
#[derive(Debug)]
pub struct ScramAuthenticator {
    user: String,
    password: Vec<u8>,
    client: Mutex<ScramClient>,
}

impl ScramAuthenticator {
    /// An authenticator for `user`.
    pub fn new(
        user: impl Into<String>,
        password: impl Into<Vec<u8>>,
    ) -> Result<Arc<Self>, ScramError> {
        let user = user.into();
        let password = password.into();
        let client = ScramClient::new(&user, password.clone())?;
        Ok(Arc::new(Self {
            user,
            password,
            client: Mutex::new(client),
        }))
    }

    /// The current client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        self.client
            .lock()
            .map(|c| c.client_first())
            .unwrap_or_default()
    }

    /// Starts a new exchange (fresh nonce) and returns its client-first message, e.g. for
    /// `Client::reauthenticate`.
    pub fn restart(&self) -> Result<Vec<u8>, ScramError> {
        let client = ScramClient::new(&self.user, self.password.clone())?;
        let first = client.client_first();
        if let Ok(mut current) = self.client.lock() {
            *current = client;
        }
        Ok(first)
    }

    /// Sets the Authentication Method `SCRAM-SHA-256`, the client-first message as the
    /// CONNECT's Authentication Data, and this authenticator in `options`.
    pub fn apply(self: &Arc<Self>, options: &mut ConnectOptions) {
        let props = &mut options.session.properties;
        props.authentication_method = Some(scram::METHOD.into());
        props.authentication_data = Some(self.client_first().into());
        options.authenticator = Some(Arc::clone(self) as Arc<dyn Authenticator>);
    }
}

impl Authenticator for ScramAuthenticator {
    fn step(&self, method: &str, server_data: &[u8]) -> Vec<u8> {
        if method != scram::METHOD {
            return Vec::new();
        }
        // A malformed challenge gets an empty answer, which the server refuses.
        self.client
            .lock()
            .ok()
            .and_then(|c| c.client_final(server_data).ok())
            .map(|(message, _)| message)
            .unwrap_or_default()
    }
}
