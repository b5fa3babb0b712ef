//! What discovery reads from a provider: `openidconnect`'s metadata with the fields it does
//! not know (RFC 9207's `authorization_response_iss_parameter_supported`).

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{AdditionalProviderMetadata, LogoutProviderMetadata};
use serde_json::Value;

/// Discovery metadata beyond what `openidconnect` reads itself.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct ExtraProviderMetadata {
    /// RFC 9207: the provider puts `iss` into every authorization response. Read leniently (any
    /// JSON value): only `true` counts, and a malformed value must not break discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<Value>,
}

impl AdditionalProviderMetadata for ExtraProviderMetadata {}

impl ExtraProviderMetadata {
    pub fn iss_parameter_supported(&self) -> bool {
        self.authorization_response_iss_parameter_supported == Some(Value::Bool(true))
    }
}

/// `openidconnect`'s `ProviderMetadataWithLogout` with [`ExtraProviderMetadata`] added.
pub type DiscoveryMetadata = openidconnect::ProviderMetadata<
    LogoutProviderMetadata<ExtraProviderMetadata>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;
