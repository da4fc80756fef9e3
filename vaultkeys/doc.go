// Package vaultkeys will implement keyring.Keyring on HashiCorp Vault transit
// (derived keys with the user id as context, vault:vN: ciphertexts, rotation
// and batch rewrap). Not implemented yet: the embedded default is the local
// keyring in package keyring. This file only reserves the package in the
// required layout.
package vaultkeys
