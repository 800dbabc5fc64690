package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// writeServiceAccountKey writes a fresh 2048-bit RSA key in PKCS#1 PEM to
// args[0] (mode 0600). kube-apiserver verifies and signs service-account
// tokens with it; kube-controller-manager signs with it too.
func writeServiceAccountKey(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: kube-local sa-key FILE")
		return 2
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sa-key: %v\n", err)
		return 1
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	if err := os.WriteFile(args[0], pem.EncodeToMemory(block), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "sa-key: %v\n", err)
		return 1
	}
	return 0
}
