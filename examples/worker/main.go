// worker: prints a heartbeat. Edit the message: lks runs `go build` in the
// service's root and restarts the binary.
package main

import (
	"fmt"
	"time"
)

const message = "worker tick"

func main() {
	for i := 0; ; i++ {
		fmt.Printf("%s %d\n", message, i)
		time.Sleep(2 * time.Second)
	}
}
