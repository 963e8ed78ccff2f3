// Command terraform-provider-agentlab is the Terraform provider for AgentLab.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/agentlab/terraform-provider-agentlab/internal/version"
	"github.com/agentlab/terraform-provider-agentlab/provider"
)

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run the provider with support for debuggers like delve")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version.Version), providerserver.ServeOpts{
		Address: "registry.terraform.io/agentlab/agentlab",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err.Error())
	}
}
