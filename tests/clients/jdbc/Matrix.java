// The client matrix, JDBC side (Debian's libpostgresql-jdbc-java, pgjdbc 42.5): the same
// checklist as python_clients.py with the driver's normal settings. The Rust test compiles
// and runs it: java -cp /usr/share/java/postgresql.jar:. Matrix PORT
import java.math.BigDecimal;
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.time.*;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class Matrix {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/runbase?user=matrix";
        try (Connection conn = DriverManager.getConnection(url)) {
            try (Statement st = conn.createStatement()) {
                st.execute("DROP TABLE IF EXISTS matrix_jdbc");
                st.execute("CREATE TABLE matrix_jdbc (b boolean, i2 smallint, i4 integer, i8 bigint, "
                    + "f4 real, f8 double precision, n numeric(10,2), s text, d date, ts timestamp, "
                    + "tz timestamptz, by bytea, arr float8[])");
            }
            // Autocommit off, as many applications run JDBC: the driver sends BEGIN.
            conn.setAutoCommit(false);
            String insert = "INSERT INTO matrix_jdbc VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)";
            OffsetDateTime tz = OffsetDateTime.of(2024, 2, 29, 13, 14, 15, 654321000, ZoneOffset.UTC);
            try (PreparedStatement ps = conn.prepareStatement(insert)) {
                ps.setBoolean(1, true);
                ps.setShort(2, (short) -2);
                ps.setInt(3, 40000);
                ps.setLong(4, 1L << 40);
                ps.setFloat(5, 1.5f);
                ps.setDouble(6, 2.25);
                ps.setBigDecimal(7, new BigDecimal("12.34"));
                ps.setString(8, "héllo, 'world'");
                ps.setObject(9, LocalDate.of(2024, 2, 29));
                ps.setObject(10, LocalDateTime.of(2024, 2, 29, 13, 14, 15, 123456000));
                ps.setObject(11, tz);
                ps.setBytes(12, new byte[] {0, 1, (byte) 0xff});
                ps.setArray(13, conn.createArrayOf("float8", new Double[] {1.0, -2.5, 3.25}));
                ps.executeUpdate();
                ps.setNull(1, Types.BOOLEAN);
                ps.setNull(2, Types.SMALLINT);
                ps.setNull(3, Types.INTEGER);
                ps.setNull(4, Types.BIGINT);
                ps.setNull(5, Types.REAL);
                ps.setNull(6, Types.DOUBLE);
                ps.setNull(7, Types.NUMERIC);
                ps.setNull(8, Types.VARCHAR);
                ps.setNull(9, Types.DATE);
                ps.setNull(10, Types.TIMESTAMP);
                ps.setNull(11, Types.TIMESTAMP_WITH_TIMEZONE);
                ps.setNull(12, Types.BINARY);
                ps.setNull(13, Types.ARRAY);
                ps.executeUpdate();
            }
            conn.commit();
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT * FROM matrix_jdbc ORDER BY i4 NULLS LAST")) {
                check(rs.next(), "first row");
                check(rs.getBoolean(1), "bool");
                check(rs.getShort(2) == -2, "int2");
                check(rs.getInt(3) == 40000, "int4");
                check(rs.getLong(4) == 1L << 40, "int8");
                check(rs.getFloat(5) == 1.5f, "float4");
                check(rs.getDouble(6) == 2.25, "float8");
                check(rs.getBigDecimal(7).compareTo(new BigDecimal("12.34")) == 0, "numeric");
                check(rs.getString(8).equals("héllo, 'world'"), "text");
                check(rs.getObject(9, LocalDate.class).equals(LocalDate.of(2024, 2, 29)), "date");
                check(rs.getObject(10, LocalDateTime.class).equals(LocalDateTime.of(2024, 2, 29, 13, 14, 15, 123456000)), "timestamp");
                check(rs.getObject(11, OffsetDateTime.class).isEqual(tz), "timestamptz " + rs.getString(11));
                byte[] by = rs.getBytes(12);
                check(by.length == 3 && by[2] == (byte) 0xff, "bytea");
                Double[] arr = (Double[]) rs.getArray(13).getArray();
                check(arr.length == 3 && arr[1] == -2.5, "float8[]");
                ResultSetMetaData md = rs.getMetaData();
                check(md.getColumnType(11) == Types.TIMESTAMP, "timestamptz type " + md.getColumnTypeName(11));
                check(md.getColumnTypeName(11).equals("timestamptz"), "timestamptz name " + md.getColumnTypeName(11));
                check(rs.next(), "second row");
                for (int i = 1; i <= 13; i++) {
                    rs.getObject(i);
                    check(rs.wasNull(), "NULL in column " + i);
                }
            }
            // pgjdbc switches to a named server-side statement on the 5th execution
            // (prepareThreshold); run it past that.
            try (PreparedStatement ps = conn.prepareStatement("SELECT ?::bigint * 2")) {
                for (long v = 1; v <= 7; v++) {
                    ps.setLong(1, v);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next() && rs.getLong(1) == v * 2, "prepared " + v);
                    }
                }
            }
            conn.commit();
            CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE matrix_jdbc_copy (id bigint, name text)");
            }
            String text = "7\tseven\n8\t\\N\n";
            long n = copy.copyIn("COPY matrix_jdbc_copy FROM STDIN", new StringReader(text));
            check(n == 2, "copy in rows " + n);
            conn.commit();
            StringWriter out = new StringWriter();
            copy.copyOut("COPY (SELECT * FROM matrix_jdbc_copy ORDER BY id) TO STDOUT", out);
            check(out.toString().equals(text), "copy out: " + out);
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM no_such_table");
                throw new AssertionError("expected 42P01");
            } catch (SQLException e) {
                check("42P01".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
            }
            conn.rollback();
            DatabaseMetaData meta = conn.getMetaData();
            try (ResultSet rs = meta.getTables(null, "public", "matrix_jdbc", new String[] {"TABLE"})) {
                check(rs.next(), "getTables finds matrix_jdbc");
            }
            try (ResultSet rs = meta.getColumns(null, "runbase", "runs", null)) {
                int cols = 0;
                while (rs.next()) cols++;
                check(cols >= 5, "getColumns of runbase.runs: " + cols);
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*) FROM runbase.experiments")) {
                check(rs.next(), "system table");
            }
            conn.commit();
        }
        System.out.println("ok jdbc");
    }
}
