// Command kube-local is a multi-call binary holding the Kubernetes control
// plane used by incident-operator's local cluster: etcd (embedded),
// kube-apiserver, kube-controller-manager and kube-scheduler, plus kubectl
// of the same release and a helper that writes the service-account key.
//
// Usage: kube-local COMPONENT [FLAGS...]
//
// Each invocation runs exactly one component in its own process; the
// components do global setup (flags, signal handlers, metrics registries),
// so they are never combined in one process.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	_ "time/tzdata" // CronJob time zone support, as upstream's mains do

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl auth plugins
)

const usage = `usage: kube-local COMPONENT [FLAGS...]

components:
  etcd                     embedded etcd server (see kube-local etcd --help)
  kube-apiserver           Kubernetes API server
  kube-controller-manager  Kubernetes controller manager
  kube-scheduler           Kubernetes scheduler
  kubectl                  kubectl (also when this binary is invoked as "kubectl")
  sa-key FILE              write a new RSA private key (PEM) for service-account tokens
`

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl()
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	// cobra reads os.Args[1:] unless told otherwise; hand each component its own flags.
	os.Args = append([]string{component}, args...)
	switch component {
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kubectl":
		runKubectl()
	case "sa-key":
		os.Exit(writeServiceAccountKey(args))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "kube-local: unknown component %q\n\n%s", component, usage)
		os.Exit(2)
	}
}

// runKubectl runs kubectl exactly as upstream's main does; os.Args[0] is
// already "kubectl" and os.Args[1:] are kubectl's own arguments.
func runKubectl() {
	logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) //nolint:errcheck
	command := kubectl.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}
