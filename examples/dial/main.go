// Command dial reads one tensor through a warm serve daemon: the smallest
// program that uses package client, whose size shows what the client links.
//
//	go run ./examples/dial SOCKET MODEL TENSOR
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/modelcache/modelcache/client"
)

func main() {
	if len(os.Args) != 4 {
		log.Fatal("usage: dial SOCKET MODEL TENSOR")
	}
	c, err := client.Dial(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	t, err := c.Tensor(context.Background(), os.Args[2], os.Args[3])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s %v: %d bytes, served by %s\n", t.Name, t.DType, t.Shape, len(t.Data), t.ServedBy)
}
