// Command vault is HashiCorp Vault built from Go modules, used only by
// totpgate's tests as a real dev server (transit, AppRole, token auth). It
// lives in its own module so Vault's dependency tree never reaches the
// project's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
