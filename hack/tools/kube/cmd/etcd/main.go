// Command etcd is the etcd server, built from the same go.etcd.io/etcd/server/v3 release that
// k8s.io/kubernetes pins, so it shares compiled dependencies with the Kubernetes binaries in this module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
