// clock: answers its label (from label.txt, read on every request) and its
// version. Built on the host by clock-build (a static binary, so its image is
// FROM scratch); listens on 127.0.0.1 only: lks forwards its port.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
)

const version = "clock v1"

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "18084"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		label, err := os.ReadFile("label.txt")
		if err != nil {
			label = []byte("(no label)")
		}
		fmt.Fprintf(w, "%s: %s\n", version, strings.TrimSpace(string(label)))
	})
	fmt.Println("clock listening on 127.0.0.1:" + port)
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		panic(err)
	}
}
