// Command goka-peer runs the Go service's processors, written with Goka as the Go service
// has them (tests/interop/reference_processors.go: the same callbacks and codecs), on the
// benchmark's input: Goka's defaults, its LevelDB storage and its changelog topic.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/storage"

	"walletinterop"
)

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap servers")
	kind := flag.String("kind", "balance", "balance or above_threshold")
	group := flag.String("group", "", "the group (and table <group>-table); default: the kind")
	stateDir := flag.String("state-dir", "./state/goka", "LevelDB storage directory")
	replication := flag.Int("replication", 1, "replication factor of the table topic Goka creates (its default is 2)")
	flag.Parse()
	if *group == "" {
		*group = *kind
	}
	var graph *goka.GroupGraph
	switch *kind {
	case "balance":
		graph = interop.BalanceGroupNamed(goka.Group(*group))
	case "above_threshold":
		graph = interop.AboveThresholdGroupNamed(goka.Group(*group))
	default:
		log.Fatalf("unknown kind %q", *kind)
	}
	// Goka's defaults, but a new group reads its input from the start, as the others do here.
	config := goka.DefaultConfig()
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	goka.ReplaceGlobalConfig(config)
	topics := goka.NewTopicManagerConfig()
	topics.Table.Replication = *replication
	topics.Stream.Replication = *replication
	processor, err := goka.NewProcessor(strings.Split(*brokers, ","), graph,
		goka.WithStorageBuilder(storage.DefaultBuilder(*stateDir)),
		goka.WithTopicManagerBuilder(goka.TopicManagerBuilderWithTopicManagerConfig(topics)))
	if err != nil {
		log.Fatalf("goka.NewProcessor: %v", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	// A setup failure right after start (a topic whose leaders are not known yet) is retried a
	// few times with a new processor; anything later ends the program.
	for attempt := 1; ; attempt++ {
		started := time.Now()
		err = processor.Run(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		if attempt >= 5 || time.Since(started) > 30*time.Second {
			log.Printf("processor stopped: %v", err)
			os.Exit(1)
		}
		log.Printf("processor setup failed (attempt %d), retrying: %v", attempt, err)
		time.Sleep(time.Second)
		if processor, err = goka.NewProcessor(strings.Split(*brokers, ","), graph,
			goka.WithStorageBuilder(storage.DefaultBuilder(*stateDir)),
			goka.WithTopicManagerBuilder(goka.TopicManagerBuilderWithTopicManagerConfig(topics))); err != nil {
			log.Fatalf("goka.NewProcessor: %v", err)
		}
	}
}
