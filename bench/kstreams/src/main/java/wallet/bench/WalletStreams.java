package wallet.bench;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.WireFormat;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The benchmark's Kafka Streams peer: the wallet service's two aggregations with the Processor
 * API, one persistent (RocksDB) key-value store per task and its changelog topic, Kafka Streams'
 * defaults otherwise. Records are the services' protobuf messages, read and written field by
 * field: a deposit's AmountMicros (or Amount), a table value that carries the offset it reflects
 * (a replayed record is skipped, as the services do).
 *
 * <pre>java -cp target/classes:target/lib/* wallet.bench.WalletStreams --bootstrap HOST:PORT
 *     --kind balance|above_threshold --application-id ID --state-dir DIR
 *     --guarantee at_least_once|exactly_once_v2</pre>
 */
public final class WalletStreams {
  static final long MICROS = 1_000_000L;
  static final long THRESHOLD_MICROS = 10_000 * MICROS; // more than this within one window flags
  static final long WINDOW_MICROS = 120 * MICROS;
  static final long LATENESS_MICROS = 60 * MICROS; // entries kept: window + lateness

  public static void main(String[] argv) throws InterruptedException {
    Map<String, String> args = new HashMap<>();
    for (int i = 0; i + 1 < argv.length; i += 2) {
      args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
    }
    String kind = args.getOrDefault("kind", "balance");
    String guarantee = args.getOrDefault("guarantee", StreamsConfig.AT_LEAST_ONCE);
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.getOrDefault("application-id", "kstreams-" + kind));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.getOrDefault("bootstrap", "127.0.0.1:9092"));
    props.put(StreamsConfig.STATE_DIR_CONFIG, args.getOrDefault("state-dir", "./state/kstreams"));
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
    // One deviation from the defaults: at-least-once commits every 30 s by default, and the
    // benchmark measures from committed offsets (exactly_once_v2 commits every 100 ms). 1 s,
    // as Quix's checkpoint interval here.
    if (StreamsConfig.AT_LEAST_ONCE.equals(guarantee)) {
      props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
    }
    String store = kind + "-store";
    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(Stores.keyValueStoreBuilder(
        Stores.persistentKeyValueStore(store), Serdes.String(), Serdes.ByteArray()));
    builder.stream("deposit", Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .process(() -> "balance".equals(kind) ? new Balance(store) : new AboveThreshold(store), store);
    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(30)); // SIGTERM: commit and leave
      done.countDown();
    }));
    streams.setUncaughtExceptionHandler(exception -> {
      exception.printStackTrace();
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
          .SHUTDOWN_APPLICATION;
    });
    streams.start();
    done.await();
  }

  /** A deposit: the fields the aggregations need (wallet.proto's DepositRequest). */
  record Deposit(long micros, long createdAtMicros) {
    static Deposit parse(byte[] data) {
      try {
        CodedInputStream in = CodedInputStream.newInstance(data);
        double amount = 0;
        long micros = Long.MIN_VALUE;
        long createdAt = 0;
        long createdAtMicros = Long.MIN_VALUE;
        for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
          switch (WireFormat.getTagFieldNumber(tag)) {
            case 2 -> amount = in.readDouble();
            case 3 -> createdAt = in.readInt64();
            case 4 -> micros = in.readInt64();
            case 6 -> createdAtMicros = in.readInt64();
            default -> in.skipField(tag);
          }
        }
        return new Deposit(micros != Long.MIN_VALUE ? micros : Math.round(amount * MICROS),
            createdAtMicros != Long.MIN_VALUE ? createdAtMicros : createdAt * MICROS);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
  }

  /** A processor over one key-value store of wallet values (the task's, with its changelog). */
  abstract static class StoreProcessor implements Processor<String, byte[], Void, Void> {
    private final String storeName;
    protected ProcessorContext<Void, Void> context;
    protected KeyValueStore<String, byte[]> store;

    StoreProcessor(String storeName) {
      this.storeName = storeName;
    }

    @Override
    public void init(ProcessorContext<Void, Void> context) {
      this.context = context;
      this.store = context.getStateStore(storeName);
    }
  }

  /** Adds each deposit to the wallet's balance; the value is a Wallet (wallet.proto, fields 1-4). */
  static final class Balance extends StoreProcessor {
    Balance(String storeName) {
      super(storeName);
    }

    @Override
    public void process(Record<String, byte[]> record) {
      long offset = context.recordMetadata().orElseThrow().offset();
      long balance = 0;
      long applied = -1;
      byte[] old = record.key() == null ? null : store.get(record.key());
      if (old != null) {
        try {
          CodedInputStream in = CodedInputStream.newInstance(old);
          for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            switch (WireFormat.getTagFieldNumber(tag)) {
              case 3 -> balance = in.readInt64();
              case 4 -> applied = in.readInt64();
              default -> in.skipField(tag);
            }
          }
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
      }
      if (record.key() == null || applied >= offset) {
        return; // no wallet, or a replayed record already counted
      }
      balance += Deposit.parse(record.value()).micros();
      ByteArrayOutputStream bytes = new ByteArrayOutputStream(48);
      CodedOutputStream out = CodedOutputStream.newInstance(bytes);
      try {
        out.writeString(1, record.key());
        out.writeDouble(2, balance / (double) MICROS);
        out.writeInt64(3, balance);
        out.writeInt64(4, offset);
        out.flush();
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      store.put(record.key(), bytes.toByteArray());
    }
  }

  /**
   * Flags a wallet, for good, once deposits within one window (CreatedAt in (t - 120 s, t])
   * sum to more than 10,000; keeps the deposits of window + lateness. The value: field 1 the
   * flag, field 2 the applied offset, field 3 each kept deposit {1: CreatedAtMicros, 2: micros}.
   */
  static final class AboveThreshold extends StoreProcessor {
    AboveThreshold(String storeName) {
      super(storeName);
    }

    @Override
    public void process(Record<String, byte[]> record) {
      if (record.key() == null) {
        return;
      }
      long offset = context.recordMetadata().orElseThrow().offset();
      boolean flagged = false;
      long applied = -1;
      List<long[]> kept = new ArrayList<>();
      byte[] old = store.get(record.key());
      try {
        if (old != null) {
          CodedInputStream in = CodedInputStream.newInstance(old);
          for (int tag = in.readTag(); tag != 0; tag = in.readTag()) {
            switch (WireFormat.getTagFieldNumber(tag)) {
              case 1 -> flagged = in.readBool();
              case 2 -> applied = in.readInt64();
              case 3 -> {
                int limit = in.pushLimit(in.readRawVarint32());
                long at = 0;
                long micros = 0;
                for (int t = in.readTag(); t != 0; t = in.readTag()) {
                  switch (WireFormat.getTagFieldNumber(t)) {
                    case 1 -> at = in.readInt64();
                    case 2 -> micros = in.readInt64();
                    default -> in.skipField(t);
                  }
                }
                in.popLimit(limit);
                kept.add(new long[] {at, micros});
              }
              default -> in.skipField(tag);
            }
          }
        }
        if (applied >= offset) {
          return; // a replayed record already counted
        }
        Deposit d = Deposit.parse(record.value());
        kept.add(new long[] {d.createdAtMicros(), d.micros()});
        long newest = kept.stream().mapToLong(e -> e[0]).max().orElse(d.createdAtMicros());
        kept.removeIf(e -> e[0] <= newest - WINDOW_MICROS - LATENESS_MICROS);
        long sum = 0;
        for (long[] e : kept) {
          if (e[0] > d.createdAtMicros() - WINDOW_MICROS && e[0] <= d.createdAtMicros()) {
            sum += e[1];
          }
        }
        flagged = flagged || sum > THRESHOLD_MICROS;
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(16 + 16 * kept.size());
        CodedOutputStream out = CodedOutputStream.newInstance(bytes);
        out.writeBool(1, flagged);
        out.writeInt64(2, offset);
        for (long[] e : kept) {
          out.writeTag(3, WireFormat.WIRETYPE_LENGTH_DELIMITED);
          out.writeUInt32NoTag(CodedOutputStream.computeInt64Size(1, e[0]) + CodedOutputStream.computeInt64Size(2, e[1]));
          out.writeInt64(1, e[0]);
          out.writeInt64(2, e[1]);
        }
        out.flush();
        store.put(record.key(), bytes.toByteArray());
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
  }
}
